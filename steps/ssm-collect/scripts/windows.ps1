# cordon-collection: OS-level forensic collection for a suspected compromised Windows EC2 instance.
#
# Sent unchanged by SSM Run Command (AWS-RunPowerShellScript). See README.md.
#
# Guarantees (keep them when editing):
#   * Read-only. It only reads (CIM/WMI queries, event logs, the registry, files) and writes into one
#     working directory of its own under the temporary directory (the memory image, the collection
#     archive), which it removes before it exits. It installs, downloads, starts, stops and changes
#     nothing (except what a memory tool that is already present does: WinPmem loads its driver for the
#     capture and unloads it). It never queries Win32_Product (that class triggers MSI consistency checks
#     and repairs); installed programs come from the registry's Uninstall keys.
#   * No interpolation of the request. It takes no parameters. Its only inputs are five environment
#     variables that the sender sets to constants (README.md "Inputs"): CORDON_CAPTURE_MEMORY compared
#     literally (case-sensitively) with "0" and "1", the budgets matched against ^[0-9]{1,6}\z before
#     conversion, the two presigned URLs against an allow-list of URL-safe characters. Nothing is
#     evaluated; the URLs (bearer credentials until they expire) are never printed.
#   * Memory first (order of volatility), when a memory tool is present.
#   * Bounded. The whole run fits in CORDON_BUDGET_SECONDS: memory in CORDON_MEMORY_BUDGET_SECONDS, then
#     each section runs in a background job with a share of what is left (in-process, with its own
#     deadline checks, if jobs are unavailable) and its output is capped in size.
#   * Not fatal. A failed step is reported in its section; the script goes on.
#
# Output: "===== section: NAME =====" ... "===== end-section: NAME status=ok|failed|truncated ... =====",
# then one last line "cordon-collection: complete sections=N failed=M". Section content is sanitised the
# same way as linux.sh: control characters become "?", crypt(3)-style hashes are redacted, and content
# lines that would look like structural or machine lines are indented by two spaces. With
# CORDON_UPLOAD_COLLECTION_URL the collection goes gzipped to that URL and stdout carries only
#   CORDON_ARTIFACT name=<memory.lime|collection.txt.gz> sha256=<64 hex> bytes=<n>
#   CORDON_GAP what=<memory|collection|upload> reason=<text to the end of the line>
#   cordon-collection: complete sections=N failed=M
# Without it the collection itself is printed, the machine lines between its sections. Exit status 1
# when a collection URL was given and the archive was not uploaded, else 0 (2: PowerShell < 3).

if ($PSVersionTable.PSVersion.Major -lt 3) {
    [Console]::Error.WriteLine('cordon-collection: cannot run: PowerShell 3.0 or later is required')
    exit 2
}

Set-StrictMode -Off
$ErrorActionPreference = 'Continue'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$ConfirmPreference = 'None'

$CordonVersion = 1
$SectionTimeoutSeconds = 120
$ProcessTimeoutSeconds = 240
$TmpFilesTimeoutSeconds = 180
$SectionMaxChars = 4194304
# CORDON_BUDGET_SECONDS when unset or invalid: the script's share of the default 1,200 s collection
# budget (cordon_common::collection::Budget: 1200 - 240 delivery - 60 upload margin).
$DefaultBudget = 900
$MinBudget = 60
$MaxBudget = 7200
$UploadReserveMax = 30
# Parts of the memory budget (percent) by which the capture must be done; hash and upload get the rest.
$MemoryCapturePct = 50
# S3 takes at most 5 GiB in one PUT ("Upload an object in a single operation ... up to 5 GB",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html); a larger image would need a
# multipart upload, i.e. one presigned URL per part, which the sender does not provide.
$S3SinglePutMaxBytes = 5GB
# Free space wanted for the image beyond the size of physical memory.
$MemorySpaceMarginBytes = 1GB
# WinPmem's standalone imager writes a raw image to the path it is given ("winpmem_mini_x64.exe
# physmem.raw", https://github.com/Velocidex/WinPmem). Looked for on PATH, then in this fixed folder.
$MemoryToolNames = @('winpmem_mini_x64_rc2.exe', 'winpmem_mini_x64.exe', 'winpmem.exe')
$MemoryToolDir = Join-Path $env:ProgramFiles 'WinPmem'

$script:SectionCount = 0
$script:FailedCount = 0

# Helpers, loaded into every section job (and into this session for the in-process fallback).
$Helpers = {
    $ErrorActionPreference = 'Continue'
    $ProgressPreference = 'SilentlyContinue'
    $WarningPreference = 'SilentlyContinue'

    $global:CordonHistoryMaxLines = 500
    $global:CordonFileMaxLines = 1000
    $global:CordonExeHashMaxBytes = 256MB
    $global:CordonTmpHashMaxBytes = 10MB
    $global:CordonTmpMaxEntries = 2000
    $global:CordonRecentDays = 7

    function Note([string]$Text) { "--- $Text" }

    function Test-PastDeadline { (Get-Date) -gt $global:CordonDeadline }

    # Step LABEL { ... }: header, then the block's output as text; an exception is reported and counted.
    function Step {
        param([string]$Label, [scriptblock]$Block)
        "--- command: $Label"
        if (Test-PastDeadline) {
            $global:CordonFails++
            "--- failed: [$Label] not run: section time budget exhausted"
            return
        }
        try {
            $ErrorActionPreference = 'Stop'
            foreach ($item in @(& $Block)) {
                if ($null -eq $item) { continue }
                if ($item -is [string]) { $item } else { ($item | Out-String -Width 4096).TrimEnd() }
            }
        } catch {
            $global:CordonFails++
            "--- failed: [$Label] $($_.Exception.Message)"
        }
    }

    function Test-Command([string]$Name) { [bool](Get-Command -Name $Name -ErrorAction SilentlyContinue) }

    # Run a native program (never through a shell) and return its stdout and stderr as text. Its stderr
    # must not become a terminating error under Step's ErrorActionPreference, hence 'Continue' here.
    function Invoke-Native([string]$Exe, [string[]]$Arguments, [int[]]$OkCodes = @(0)) {
        $ErrorActionPreference = 'Continue'
        if (-not (Test-Command $Exe)) { return "unavailable: $Exe" }
        $lines = @(& $Exe @Arguments 2>&1 | ForEach-Object { [string]$_ })
        $code = $LASTEXITCODE
        $text = ($lines -join "`n").TrimEnd()
        if ($OkCodes -notcontains $code) { throw "$Exe exited with $code`: $text" }
        $text
    }

    # Objects from the pipeline as one block of text (a table or a list); "(none)" when there are none.
    function Format-Tab {
        param([Parameter(ValueFromPipeline = $true)]$InputObject)
        begin { $all = New-Object System.Collections.ArrayList }
        process { if ($null -ne $InputObject) { [void]$all.Add($InputObject) } }
        end {
            if ($all.Count -eq 0) { return '(none)' }
            ($all | Format-Table -AutoSize -Wrap | Out-String -Width 4096).TrimEnd()
        }
    }
    function Format-Lst {
        param([Parameter(ValueFromPipeline = $true)]$InputObject)
        begin { $all = New-Object System.Collections.ArrayList }
        process { if ($null -ne $InputObject) { [void]$all.Add($InputObject) } }
        end {
            if ($all.Count -eq 0) { return '(none)' }
            ($all | Format-List | Out-String -Width 4096).TrimEnd()
        }
    }

    # One field of a tab-separated row: no tabs or line breaks.
    function Clean([object]$Value) {
        if ($null -eq $Value) { return '-' }
        $s = [string]$Value
        if ($s.Length -eq 0) { return '-' }
        $s -replace "[`t`r`n]", ' '
    }

    function Get-Cim([string]$Class, [string]$Filter) {
        if (Test-Command 'Get-CimInstance') {
            if ($Filter) { Get-CimInstance -ClassName $Class -Filter $Filter -OperationTimeoutSec 60 -ErrorAction Stop }
            else { Get-CimInstance -ClassName $Class -OperationTimeoutSec 60 -ErrorAction Stop }
        } else {
            if ($Filter) { Get-WmiObject -Class $Class -Filter $Filter -ErrorAction Stop }
            else { Get-WmiObject -Class $Class -ErrorAction Stop }
        }
    }

    # SHA-256 (lower case) of a file, or why it was not hashed. Files in use are read with shared access.
    function Get-Sha256([string]$Path, [long]$MaxBytes) {
        try {
            $item = Get-Item -LiteralPath $Path -Force -ErrorAction Stop
            if ($item.PSIsContainer) { return 'not-hashed:directory' }
            if ($MaxBytes -gt 0 -and $item.Length -gt $MaxBytes) { return "not-hashed:larger-than-$MaxBytes" }
        } catch { return 'not-hashed:missing-or-unreadable' }
        if (Test-PastDeadline) { return 'not-hashed:time-budget' }
        try {
            if (Test-Command 'Get-FileHash') {
                return (Get-FileHash -LiteralPath $Path -Algorithm SHA256 -ErrorAction Stop).Hash.ToLowerInvariant()
            }
        } catch { }
        $stream = $null
        $sha = $null
        try {
            $share = [System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete
            $stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share)
            $sha = [System.Security.Cryptography.SHA256]::Create()
            return (([BitConverter]::ToString($sha.ComputeHash($stream))) -replace '-', '').ToLowerInvariant()
        } catch {
            return 'not-hashed:read-error'
        } finally {
            if ($stream) { $stream.Dispose() }
            if ($sha) { $sha.Dispose() }
        }
    }

    # Show the first (or last) lines of a text file, with its metadata.
    function Show-File([string]$Path, [int]$Lines, [switch]$Tail) {
        if ($Lines -le 0) { $Lines = $global:CordonFileMaxLines }
        try {
            $item = Get-Item -LiteralPath $Path -Force -ErrorAction Stop
        } catch {
            Note "absent: $Path"
            return
        }
        Note ("file: {0} (size={1} created={2:o} modified={3:o})" -f $item.FullName, $item.Length,
            $item.CreationTimeUtc, $item.LastWriteTimeUtc)
        try {
            if ($Tail) { Get-Content -LiteralPath $Path -Tail $Lines -ErrorAction Stop }
            else { Get-Content -LiteralPath $Path -TotalCount $Lines -ErrorAction Stop }
        } catch {
            $global:CordonFails++
            Note "failed: cannot read ${Path}: $($_.Exception.Message)"
        }
    }

    # Profile directories: from the ProfileList key (covers profiles outside C:\Users) plus C:\Users\*.
    function Get-ProfileDirs {
        $seen = @{}
        $dirs = @()
        try {
            Get-ChildItem -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList' -ErrorAction Stop |
                ForEach-Object {
                    $p = (Get-ItemProperty -LiteralPath $_.PSPath -Name ProfileImagePath -ErrorAction SilentlyContinue).ProfileImagePath
                    if ($p) { $dirs += [Environment]::ExpandEnvironmentVariables($p) }
                }
        } catch { }
        $usersRoot = Join-Path $env:SystemDrive 'Users'
        if (Test-Path -LiteralPath $usersRoot) {
            Get-ChildItem -LiteralPath $usersRoot -Directory -Force -ErrorAction SilentlyContinue |
                ForEach-Object { $dirs += $_.FullName }
        }
        foreach ($d in $dirs) {
            $k = $d.TrimEnd('\').ToLowerInvariant()
            if (-not $seen.ContainsKey($k) -and (Test-Path -LiteralPath $d -PathType Container)) {
                $seen[$k] = $true
                $d
            }
        }
    }

    # Files changed recently under a directory, without following junctions or symbolic links.
    function Get-RecentFiles([string]$Root, [int]$MaxDepth, [datetime]$Since, [ref]$Count) {
        $queue = New-Object System.Collections.Queue
        $queue.Enqueue(@($Root, 0))
        while ($queue.Count -gt 0) {
            if (Test-PastDeadline) { Note "failed: time budget exhausted while scanning $Root"; $global:CordonFails++; return }
            $next = $queue.Dequeue()
            $dir = $next[0]
            $depth = $next[1]
            try { $children = Get-ChildItem -LiteralPath $dir -Force -ErrorAction Stop } catch { Note "unreadable: $dir"; continue }
            foreach ($c in $children) {
                $isLink = [bool]($c.Attributes -band [System.IO.FileAttributes]::ReparsePoint)
                if ($c.PSIsContainer) {
                    if (-not $isLink -and $depth -lt $MaxDepth) { $queue.Enqueue(@($c.FullName, ($depth + 1))) }
                    if ($c.LastWriteTimeUtc -lt $Since -and $c.CreationTimeUtc -lt $Since) { continue }
                    $type = if ($isLink) { 'link-dir' } else { 'dir' }
                    $hash = '-'
                    $size = '-'
                } else {
                    if ($c.LastWriteTimeUtc -lt $Since -and $c.CreationTimeUtc -lt $Since) { continue }
                    $type = if ($isLink) { 'link' } else { 'file' }
                    $size = $c.Length
                    $hash = if ($isLink) { '-' } elseif ($c.Length -le $global:CordonTmpHashMaxBytes) { Get-Sha256 $c.FullName 0 } else { 'not-hashed:too-large' }
                }
                $Count.Value++
                if ($Count.Value -gt $global:CordonTmpMaxEntries) { Note "truncated: more than $($global:CordonTmpMaxEntries) entries"; return }
                $owner = '-'
                try { $owner = (Get-Acl -LiteralPath $c.FullName -ErrorAction Stop).Owner } catch { }
                "{0}`t{1}`t{2}`t{3:o}`t{4:o}`t{5}`t{6}" -f $type, $size, (Clean $owner), $c.CreationTimeUtc,
                $c.LastWriteTimeUtc, $hash, (Clean $c.FullName)
            }
        }
    }
}

# ---------------------------------------------------------------------------------------------------
# Sections. Each is a script block run by Invoke-Section; helpers above are available.

$SecIdentity = {
    Step 'date (UTC)' { (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) }
    Step 'computer name' { $env:COMPUTERNAME }
    Step 'Win32_OperatingSystem' {
        $os = Get-Cim 'Win32_OperatingSystem'
        $os | Select-Object 'Caption', 'Version', 'BuildNumber', 'OSArchitecture', 'InstallDate', 'LastBootUpTime', 'LocalDateTime' | Format-Lst
        'uptime: ' + ((Get-Date) - $os.LastBootUpTime).ToString()
    }
    Step 'Win32_ComputerSystem' { Get-Cim 'Win32_ComputerSystem' | Select-Object 'Name', 'Domain', 'PartOfDomain', 'Workgroup', 'Manufacturer', 'Model' | Format-Lst }
    Step 'Win32_ComputerSystemProduct' { Get-Cim 'Win32_ComputerSystemProduct' | Select-Object 'Vendor', 'Name', 'UUID', 'IdentifyingNumber' | Format-Lst }
    Step 'time zone' { [TimeZoneInfo]::Local.Id }
    Step 'collector' {
        'cordon-collection (windows) powershell={0} edition={1} user={2} pid={3}' -f $PSVersionTable.PSVersion,
        $PSVersionTable.PSEdition, [Security.Principal.WindowsIdentity]::GetCurrent().Name, $PID
    }
}

$SecProcesses = {
    $owners = @{}
    $paths = @{}
    try {
        foreach ($p in (Get-Process -IncludeUserName -ErrorAction Stop)) { $owners[[int]$p.Id] = $p.UserName; $paths[[int]$p.Id] = $p.Path }
    } catch {
        Note "Get-Process -IncludeUserName failed ($($_.Exception.Message)); owners omitted"
        foreach ($p in (Get-Process -ErrorAction SilentlyContinue)) { $paths[[int]$p.Id] = $p.Path }
    }
    try {
        $procs = @(Get-Cim 'Win32_Process' | Sort-Object 'ProcessId')
    } catch {
        $global:CordonFails++
        Note "failed: Win32_Process: $($_.Exception.Message)"
        $procs = @()
    }
    $hashes = @{}
    $suspicious = @()
    $tempLike = '(?i)\\(temp|tmp|appdata\\local\\temp|users\\public|downloads|perflogs)\\|\\programdata\\[^\\]+\.exe$|\\\$recycle\.bin\\'
    Note 'process table (sha256 of the executable on disk; flags: missing-on-disk, temp-path)'
    "pid`tppid`tuser`tflags`tsha256`tcreated_utc`texe`tcmdline"
    foreach ($p in $procs) {
        if (Test-PastDeadline) { $global:CordonFails++; Note 'failed: section time budget exhausted'; break }
        $procId = [int]$p.ProcessId
        $exe = $p.ExecutablePath
        if (-not $exe -and $paths.ContainsKey($procId)) { $exe = $paths[$procId] }
        $flags = @()
        $sha = '-'
        if ($exe) {
            if (-not (Test-Path -LiteralPath $exe -PathType Leaf)) { $flags += 'missing-on-disk'; $sha = 'not-hashed:missing' }
            else {
                $key = $exe.ToLowerInvariant()
                if (-not $hashes.ContainsKey($key)) { $hashes[$key] = Get-Sha256 $exe $global:CordonExeHashMaxBytes }
                $sha = $hashes[$key]
            }
            if ($exe -match $tempLike) { $flags += 'temp-path' }
        }
        if ($flags.Count) { $suspicious += $procId }
        $created = '-'
        if ($p.CreationDate) {
            try { $created = ([datetime]$p.CreationDate).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) } catch { }
        }
        $cmd = [string]$p.CommandLine
        if ($cmd.Length -gt 4096) { $cmd = $cmd.Substring(0, 4096) }
        "{0}`t{1}`t{2}`t{3}`t{4}`t{5}`t{6}`t{7}" -f $procId, $p.ParentProcessId, (Clean $owners[$procId]),
        $(if ($flags.Count) { $flags -join ',' } else { '-' }), $sha, $created, (Clean $exe), (Clean $cmd)
    }
    Note "processes: $($procs.Count); with a missing or temp-directory executable: $(if ($suspicious.Count) { $suspicious -join ' ' } else { 'none' })"
}

$SecNetwork = {
    $names = @{}
    foreach ($p in (Get-Process -ErrorAction SilentlyContinue)) { $names[[int]$p.Id] = $p.ProcessName }
    if (Test-Command 'Get-NetTCPConnection') {
        Step 'Get-NetTCPConnection' {
            Get-NetTCPConnection -ErrorAction Stop | Sort-Object 'State', 'LocalPort' |
                Select-Object 'LocalAddress', 'LocalPort', 'RemoteAddress', 'RemotePort', 'State', 'OwningProcess',
                @{ n = 'Process'; e = { $names[[int]$_.OwningProcess] } }, 'CreationTime' | Format-Tab
        }
        Step 'Get-NetUDPEndpoint' {
            Get-NetUDPEndpoint -ErrorAction Stop | Sort-Object 'LocalPort' |
                Select-Object 'LocalAddress', 'LocalPort', 'OwningProcess', @{ n = 'Process'; e = { $names[[int]$_.OwningProcess] } }, 'CreationTime' | Format-Tab
        }
    } else {
        Note 'unavailable: Get-NetTCPConnection (netstat output below)'
    }
    Step 'netstat -ano' { Invoke-Native 'netstat.exe' @('-ano') }
    Step 'ipconfig /all' { Invoke-Native 'ipconfig.exe' @('/all') }
    Step 'route print' { Invoke-Native 'route.exe' @('print') }
    Step 'arp -a' { Invoke-Native 'arp.exe' @('-a') }
    if (Test-Command 'Get-DnsClientCache') {
        Step 'Get-DnsClientCache' { Get-DnsClientCache -ErrorAction Stop | Select-Object 'Entry', 'Data', 'Type', 'TimeToLive' | Format-Tab }
    }
    Show-File (Join-Path $env:SystemRoot 'System32\drivers\etc\hosts') 500
}

$SecLogins = {
    # quser exits 1 with "No User exists for *" when nobody is logged on.
    Step 'quser' { Invoke-Native 'quser.exe' @() @(0, 1) }
    Step 'Win32_UserProfile (last use)' {
        Get-Cim 'Win32_UserProfile' | Where-Object { -not $_.Special } |
            Select-Object 'LocalPath', 'SID', 'Loaded', @{ n = 'LastUseTime'; e = { $_.LastUseTime } } | Format-Tab
    }
    $since = (Get-Date).AddDays(-7)
    $fields = 'TargetUserName', 'TargetDomainName', 'LogonType', 'IpAddress', 'WorkstationName', 'ProcessName', 'SubjectUserName'
    $render = {
        param($events)
        foreach ($e in $events) {
            $data = @{}
            try {
                foreach ($d in ([xml]$e.ToXml()).Event.EventData.Data) { $data[$d.Name] = $d.'#text' }
            } catch { }
            $parts = foreach ($f in $fields) { if ($data[$f]) { "$f=$(Clean $data[$f])" } }
            '{0:o} id={1} {2}' -f $e.TimeCreated.ToUniversalTime(), $e.Id, ($parts -join ' ')
        }
    }
    Step 'Security log: logons 4624 (not service logons), last 7 days, newest 200' {
        $xpath = "*[System[EventID=4624]] and *[EventData[Data[@Name='LogonType']!='5']]"
        try { $ev = @(Get-WinEvent -LogName Security -FilterXPath $xpath -MaxEvents 200 -ErrorAction Stop | Where-Object { $_.TimeCreated -ge $since }) }
        catch { if ($_.Exception.Message -match 'No events were found') { return '(none)' } else { throw } }
        & $render $ev
    }
    Step 'Security log: 4625 failed, 4648 explicit credentials, 4778/4779 RDP reconnect/disconnect; last 7 days, newest 200' {
        try { $ev = @(Get-WinEvent -FilterHashtable @{ LogName = 'Security'; Id = 4625, 4648, 4778, 4779; StartTime = $since } -MaxEvents 200 -ErrorAction Stop) }
        catch { if ($_.Exception.Message -match 'No events were found') { return '(none)' } else { throw } }
        & $render $ev
    }
    Step 'RDP sessions (TerminalServices-LocalSessionManager 21, 22, 24, 25), newest 50' {
        try {
            $ev = @(Get-WinEvent -FilterHashtable @{ LogName = 'Microsoft-Windows-TerminalServices-LocalSessionManager/Operational'; Id = 21, 22, 24, 25; StartTime = $since } -MaxEvents 50 -ErrorAction Stop)
        } catch { if ($_.Exception.Message -match 'No events were found|There is not an event log') { return '(none)' } else { throw } }
        foreach ($e in $ev) {
            $u = ''
            try { $x = [xml]$e.ToXml(); $u = "User=$(Clean $x.Event.UserData.EventXML.User) Address=$(Clean $x.Event.UserData.EventXML.Address)" } catch { }
            '{0:o} id={1} {2}' -f $e.TimeCreated.ToUniversalTime(), $e.Id, $u
        }
    }
}

$SecDrivers = {
    Step 'Win32_SystemDriver' {
        Get-Cim 'Win32_SystemDriver' | Sort-Object 'Name' |
            Select-Object 'Name', 'State', 'StartMode', 'ServiceType', 'PathName' | Format-Tab
    }
    # No Authenticode check: WinVerifyTrust may fetch revocation data over the network.
    Step 'running drivers outside System32\drivers, with sha256' {
        $std = (Join-Path $env:SystemRoot 'System32\drivers\').ToLowerInvariant()
        $rows = foreach ($d in (Get-Cim 'Win32_SystemDriver' -Filter "State='Running'")) {
            if (Test-PastDeadline) { break }
            $path = [string]$d.PathName
            $path = $path -replace '^\\\?\?\\', ''
            $path = $path -replace '^(?i)\\SystemRoot\\', ($env:SystemRoot + '\')
            $path = $path -replace '^(?i)system32\\', ($env:SystemRoot + '\System32\')
            if (-not $path.ToLowerInvariant().StartsWith($std)) {
                [pscustomobject]@{ Name = $d.Name; Sha256 = (Get-Sha256 $path $global:CordonExeHashMaxBytes); Path = $path }
            }
        }
        $rows | Format-Tab
    }
}

$SecScheduledTasks = {
    if (Test-Command 'Get-ScheduledTask') {
        Step 'Get-ScheduledTask' {
            foreach ($t in (Get-ScheduledTask -ErrorAction Stop | Sort-Object 'TaskPath', 'TaskName')) {
                if (Test-PastDeadline) { $global:CordonFails++; Note 'failed: section time budget exhausted'; break }
                $actions = @(foreach ($a in $t.Actions) {
                        if ($a.Execute) { "exec: $($a.Execute) $($a.Arguments)".Trim() }
                        elseif ($a.ClassId) { "com: $($a.ClassId) $($a.Data)".Trim() }
                        else { [string]$a }
                    }) -join ' | '
                $info = $null
                try { $info = Get-ScheduledTaskInfo -InputObject $t -ErrorAction Stop } catch { }
                $triggers = @(foreach ($tr in $t.Triggers) { ($tr.CimClass.CimClassName -replace '^MSFT_Task', '') -replace 'Trigger$', '' }) -join ','
                "task: {0}{1}`tstate={2}`tuser={3}`tauthor={4}`ttriggers={5}`tlast_run={6}`tnext_run={7}`tactions={8}" -f $t.TaskPath,
                $t.TaskName, $t.State, (Clean $t.Principal.UserId), (Clean $t.Author), (Clean $triggers),
                $(if ($info) { $info.LastRunTime } else { '-' }), $(if ($info) { $info.NextRunTime } else { '-' }), (Clean $actions)
            }
        }
    } else {
        Step 'schtasks /query /fo LIST /v' { Invoke-Native 'schtasks.exe' @('/query', '/fo', 'LIST', '/v') }
    }
}

$SecServices = {
    Step 'Win32_Service' {
        Get-Cim 'Win32_Service' | Sort-Object 'Name' |
            Select-Object 'Name', 'State', 'StartMode', 'StartName', 'ProcessId', 'PathName' | Format-Tab
    }
}

$SecAutoruns = {
    $keys = @(
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Run',
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\RunOnce',
        'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Run',
        'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\RunOnce',
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\Explorer\Run'
    )
    try {
        foreach ($u in (Get-ChildItem -LiteralPath 'Registry::HKEY_USERS' -ErrorAction Stop)) {
            if ($u.PSChildName -like '*_Classes') { continue }
            $keys += "Registry::HKEY_USERS\$($u.PSChildName)\Software\Microsoft\Windows\CurrentVersion\Run"
            $keys += "Registry::HKEY_USERS\$($u.PSChildName)\Software\Microsoft\Windows\CurrentVersion\RunOnce"
        }
    } catch { Note "HKEY_USERS not readable: $($_.Exception.Message)" }
    foreach ($k in $keys) {
        if (-not (Test-Path -LiteralPath $k)) { continue }
        Step "registry $k" {
            $props = Get-ItemProperty -LiteralPath $k -ErrorAction Stop
            $providerProps = @('PSPath', 'PSParentPath', 'PSChildName', 'PSDrive', 'PSProvider')
            foreach ($p in $props.PSObject.Properties) {
                if ($providerProps -notcontains $p.Name) { '{0} = {1}' -f $p.Name, (Clean $p.Value) }
            }
        }
    }
    Step 'Winlogon Shell, Userinit, Taskman' {
        $w = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon' -ErrorAction Stop
        'Shell = {0}' -f (Clean $w.Shell)
        'Userinit = {0}' -f (Clean $w.Userinit)
        'Taskman = {0}' -f (Clean $w.Taskman)
    }
    Step 'Image File Execution Options with a Debugger' {
        $ifeo = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options'
        foreach ($i in (Get-ChildItem -LiteralPath $ifeo -ErrorAction Stop)) {
            $d = (Get-ItemProperty -LiteralPath $i.PSPath -Name Debugger -ErrorAction SilentlyContinue).Debugger
            if ($d) { '{0} Debugger = {1}' -f $i.PSChildName, (Clean $d) }
        }
    }
    $startup = @(Join-Path $env:ProgramData 'Microsoft\Windows\Start Menu\Programs\StartUp')
    foreach ($h in (Get-ProfileDirs)) { $startup += Join-Path $h 'AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup' }
    foreach ($s in $startup) {
        if (-not (Test-Path -LiteralPath $s)) { continue }
        Step "startup folder $s" {
            Get-ChildItem -LiteralPath $s -Force -ErrorAction Stop |
                Select-Object 'Name', 'Length', 'CreationTimeUtc', 'LastWriteTimeUtc' | Format-Tab
        }
    }
}

$SecShellHistories = {
    $homes = @(Get-ProfileDirs)
    $homes += Join-Path $env:SystemRoot 'System32\config\systemprofile'
    $homes += Join-Path $env:SystemRoot 'ServiceProfiles\LocalService'
    $homes += Join-Path $env:SystemRoot 'ServiceProfiles\NetworkService'
    $found = 0
    $seen = @{}
    foreach ($h in $homes) {
        $dir = Join-Path $h 'AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine'
        $k = $dir.ToLowerInvariant()
        if ($seen.ContainsKey($k)) { continue }
        $seen[$k] = $true
        if (-not (Test-Path -LiteralPath $dir -PathType Container)) { continue }
        foreach ($f in (Get-ChildItem -LiteralPath $dir -Filter '*.txt' -Force -ErrorAction SilentlyContinue)) {
            $found++
            Show-File $f.FullName $global:CordonHistoryMaxLines -Tail
        }
    }
    Note "PSReadLine history files found: $found (last $($global:CordonHistoryMaxLines) lines of each shown)"
}

$SecRecentTmpFiles = {
    $since = (Get-Date).AddDays(-$global:CordonRecentDays).ToUniversalTime()
    $roots = @((Join-Path $env:SystemRoot 'Temp'), (Join-Path $env:SystemDrive 'Users\Public'))
    if ($env:TEMP) { $roots += $env:TEMP }
    foreach ($h in (Get-ProfileDirs)) { $roots += Join-Path $h 'AppData\Local\Temp' }
    $seen = @{}
    foreach ($r in $roots) {
        $k = $r.TrimEnd('\').ToLowerInvariant()
        if ($seen.ContainsKey($k) -or -not (Test-Path -LiteralPath $r -PathType Container)) { continue }
        $seen[$k] = $true
        Note "entries under $r changed or created in the last $($global:CordonRecentDays) days (depth <= 5, junctions not followed, sha256 for files up to $($global:CordonTmpHashMaxBytes) bytes)"
        "type`tsize`towner`tcreated_utc`tmodified_utc`tsha256`tpath"
        $count = 0
        Get-RecentFiles $r 5 $since ([ref]$count)
        Note "entries listed under ${r}: $([Math]::Min($count, $global:CordonTmpMaxEntries))"
    }
}

$SecAccounts = {
    if (Test-Command 'Get-LocalUser') {
        Step 'Get-LocalUser' {
            Get-LocalUser -ErrorAction Stop |
                Select-Object 'Name', 'Enabled', 'SID', 'LastLogon', 'PasswordLastSet', 'PasswordRequired', 'PasswordExpires', 'UserMayChangePassword', 'Description' | Format-Tab
        }
    } else {
        Step 'Win32_UserAccount (local)' {
            Get-Cim 'Win32_UserAccount' -Filter 'LocalAccount=True' |
                Select-Object 'Name', 'Disabled', 'Lockout', 'SID', 'PasswordRequired', 'PasswordExpires', 'Description' | Format-Tab
        }
    }
    foreach ($sid in 'S-1-5-32-544', 'S-1-5-32-555', 'S-1-5-32-580') {
        $groupName = $sid
        try { $groupName = (New-Object System.Security.Principal.SecurityIdentifier $sid).Translate([System.Security.Principal.NTAccount]).Value.Split('\')[-1] } catch { }
        Step "members of $groupName ($sid)" {
            $members = $null
            if (Test-Command 'Get-LocalGroupMember') {
                try { $members = Get-LocalGroupMember -SID $sid -ErrorAction Stop | Select-Object 'Name', 'ObjectClass', 'PrincipalSource', 'SID' } catch { $members = $null }
            }
            if ($null -ne $members) { return ($members | Format-Tab) }
            # Fallback (also for the known failure of Get-LocalGroupMember on orphaned SIDs): ADSI.
            $group = [ADSI]"WinNT://./$groupName,group"
            foreach ($m in @($group.Invoke('Members'))) {
                $m.GetType().InvokeMember('ADsPath', 'GetProperty', $null, $m, $null)
            }
        }
    }
}

$SecInstalledPrograms = {
    $keys = @(
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall',
        'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall'
    )
    try {
        foreach ($u in (Get-ChildItem -LiteralPath 'Registry::HKEY_USERS' -ErrorAction Stop)) {
            if ($u.PSChildName -notlike '*_Classes') { $keys += "Registry::HKEY_USERS\$($u.PSChildName)\Software\Microsoft\Windows\CurrentVersion\Uninstall" }
        }
    } catch { }
    Note 'installed programs from the registry Uninstall keys (Win32_Product is never queried: it triggers MSI repairs)'
    Step 'Uninstall keys' {
        $rows = foreach ($k in $keys) {
            if (-not (Test-Path -LiteralPath $k)) { continue }
            foreach ($i in (Get-ChildItem -LiteralPath $k -ErrorAction SilentlyContinue)) {
                $p = Get-ItemProperty -LiteralPath $i.PSPath -ErrorAction SilentlyContinue
                if ($p -and $p.DisplayName) {
                    [pscustomobject]@{
                        Name = $p.DisplayName; Version = $p.DisplayVersion; Publisher = $p.Publisher
                        InstallDate = $p.InstallDate; Location = $p.InstallLocation; Hive = ($k -replace '^Registry::', '')
                    }
                }
            }
        }
        $rows | Sort-Object 'Name' | Format-Tab
    }
    Step 'Win32_QuickFixEngineering (hotfixes)' {
        Get-Cim 'Win32_QuickFixEngineering' | Select-Object 'HotFixID', 'Description', 'InstalledOn', 'InstalledBy' | Format-Tab
    }
}

# ---------------------------------------------------------------------------------------------------
# Driver

$script:Out = [Console]::Out   # the collection: stdout, the archive's text file, or nowhere
$script:Clock = [Diagnostics.Stopwatch]::StartNew()
$script:FailedNames = @()
$script:NotRun = @()
$script:WorkDir = $null
$script:Budget = $DefaultBudget
$script:MemoryBudget = [int][Math]::Floor($DefaultBudget * 3 / 5)
$script:CollectionUrl = $null   # presigned PUT URLs: bearer credentials, never printed
$script:MemoryUrl = $null
$script:CollectionUrlState = 'unset'
$script:MemoryUrlState = 'unset'
$script:SettingNotes = @()
$script:ExitCode = 0

function Emit([string]$Line) { $script:Out.WriteLine($Line) }

# A machine line (CORDON_ARTIFACT, CORDON_GAP) or the summary: on the command's stdout, never in the
# collection.
function Write-MachineLine([string]$Line) { [Console]::Out.WriteLine($Line) }

function Get-Elapsed { [int][Math]::Floor($script:Clock.Elapsed.TotalSeconds) }

# Control characters become "?", crypt(3)-style hashes are redacted, marker and machine-line look-alikes
# are indented.
function Protect-Line([string]$Line) {
    $l = $Line -replace '[\x00-\x08\x0B-\x1F\x7F]', '?'
    $l = $l -replace '\$(1|2[abxy]|5|6|7|y|gy|sha1|md5)\$[./A-Za-z0-9$=,+-]*', '[REDACTED-CRYPT-HASH]'
    if ($l -match '^(=====|cordon-collection:|CORDON_)') { $l = '  ' + $l }
    $l
}

# Runs one section body in a job (hard time limit) and prints its sanitised, size-capped output.
$Runner = {
    param([string]$BodyText, [int]$Budget)
    $global:CordonFails = 0
    $global:CordonDeadline = (Get-Date).AddSeconds([Math]::Max(5, [int]($Budget * 0.85)))
    try {
        & ([scriptblock]::Create($BodyText))
    } catch {
        $global:CordonFails++
        "--- failed: $($_.Exception.Message)"
    }
    "cordon-internal-fails=$global:CordonFails"
}

# Invoke-Section NAME BODY SECONDS (0: not run, the budget is spent)
function Invoke-Section([string]$Name, [scriptblock]$Body, [int]$TimeoutSeconds) {
    $script:SectionCount++
    Emit "===== section: $Name ====="
    if ($TimeoutSeconds -lt 1) {
        Emit "--- not run: the collection time budget ($($script:Budget)s) is spent"
        Emit "===== end-section: $Name status=failed elapsed=0s ====="
        $script:FailedCount++
        $script:NotRun += $Name
        return
    }
    $watch = [Diagnostics.Stopwatch]::StartNew()
    $output = @()
    $problem = $null
    $job = $null
    $bodyText = $Body.ToString()
    try {
        $job = Start-Job -InitializationScript $Helpers -ScriptBlock $Runner -ArgumentList $bodyText, $TimeoutSeconds -ErrorAction Stop
    } catch {
        $job = $null
    }
    if ($job) {
        $finished = Wait-Job -Job $job -Timeout $TimeoutSeconds
        if (-not $finished) {
            Stop-Job -Job $job -ErrorAction SilentlyContinue
            $problem = "timed out after ${TimeoutSeconds}s (partial output above)"
        }
        $jobErrors = $null
        $output = @(Receive-Job -Job $job -ErrorAction SilentlyContinue -ErrorVariable jobErrors)
        foreach ($e in @($jobErrors)) { if ($e) { $output = @("--- error: $e") + $output } }
        Remove-Job -Job $job -Force -ErrorAction SilentlyContinue
    } else {
        $output = @("--- note: background jobs unavailable; running in this session with deadline checks only")
        . $Helpers
        $output += @(& $Runner $bodyText $TimeoutSeconds 2>&1 | ForEach-Object { [string]$_ })
    }
    $fails = $null
    if ($output.Count -gt 0 -and ([string]$output[-1]) -match '^cordon-internal-fails=(\d+)$') {
        $fails = [int]$Matches[1]
        $output = @($output | Select-Object -First ($output.Count - 1))
    } elseif (-not $problem) {
        $problem = 'section did not complete'
    }
    $written = 0
    $truncated = $false
    foreach ($item in $output) {
        foreach ($line in ([string]$item -split "`r?`n")) {
            $safe = Protect-Line $line
            $written += $safe.Length + 1
            if ($written -gt $SectionMaxChars) { $truncated = $true; break }
            Emit $safe
        }
        if ($truncated) { break }
    }
    if ($truncated) { Emit "--- section output truncated at $SectionMaxChars characters" }
    if ($problem) { Emit "--- failed: $problem" }
    $status = 'ok'
    if ($problem -or ($fails -gt 0)) { $status = 'failed'; $script:FailedCount++; $script:FailedNames += $Name }
    elseif ($truncated) { $status = 'truncated' }
    Emit ("===== end-section: {0} status={1} elapsed={2}s =====" -f $Name, $status, [int]$watch.Elapsed.TotalSeconds)
}

# ---------------------------------------------------------------------------------------------------
# Settings, working directory, upload

# An integer in MIN..MAX, or $null. The pattern is checked before any conversion; \z, not $, because
# .NET's $ also matches before a final newline.
function Get-IntSetting([string]$Value, [int]$Min, [int]$Max) {
    if ($null -eq $Value -or $Value -cnotmatch '^[0-9]{1,6}\z') { return $null }
    $n = [int]$Value
    if ($n -lt $Min -or $n -gt $Max) { return $null }
    $n
}

# http(s) and only URL-safe characters (RFC 3986 unreserved, reserved and "%"). Case-sensitive match:
# a case-insensitive one would let .NET's case folding admit non-ASCII letters.
$UrlPattern = '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~:/?#@!$&''()*+,;=%-]*\z'
function Test-UploadUrl([string]$Value) { ($null -ne $Value) -and ($Value.Length -le 8192) -and ($Value -cmatch $UrlPattern) }

function Read-Settings {
    $raw = [Environment]::GetEnvironmentVariable('CORDON_BUDGET_SECONDS')
    if ($null -ne $raw) {
        $n = Get-IntSetting $raw $MinBudget $MaxBudget
        if ($null -ne $n) { $script:Budget = $n }
        else { $script:SettingNotes += "CORDON_BUDGET_SECONDS is not an integer in $MinBudget..$MaxBudget; $($script:Budget)s is used" }
    }
    $script:MemoryBudget = [int][Math]::Floor($script:Budget * 3 / 5)
    $raw = [Environment]::GetEnvironmentVariable('CORDON_MEMORY_BUDGET_SECONDS')
    if ($null -ne $raw) {
        $n = Get-IntSetting $raw 10 ($script:Budget - 10)
        if ($null -ne $n) { $script:MemoryBudget = $n }
        else { $script:SettingNotes += "CORDON_MEMORY_BUDGET_SECONDS is not an integer in 10..$($script:Budget - 10); $($script:MemoryBudget)s is used" }
    }
    $raw = [Environment]::GetEnvironmentVariable('CORDON_UPLOAD_COLLECTION_URL')
    if ($null -ne $raw) {
        if (Test-UploadUrl $raw) { $script:CollectionUrl = $raw; $script:CollectionUrlState = 'valid' }
        else { $script:CollectionUrlState = 'invalid' }
    }
    $raw = [Environment]::GetEnvironmentVariable('CORDON_UPLOAD_MEMORY_URL')
    if ($null -ne $raw) {
        if (Test-UploadUrl $raw) { $script:MemoryUrl = $raw; $script:MemoryUrlState = 'valid' }
        else { $script:MemoryUrlState = 'invalid' }
    }
    # The URLs stay in this session's variables only: the section jobs (new processes) do not inherit them.
    [Environment]::SetEnvironmentVariable('CORDON_UPLOAD_COLLECTION_URL', $null)
    [Environment]::SetEnvironmentVariable('CORDON_UPLOAD_MEMORY_URL', $null)
}

# Creates the working directory once, under this account's temporary directory (C:\Windows\Temp for
# SYSTEM), with an unguessable name.
function New-WorkDir {
    if ($script:WorkDir) { return $true }
    try {
        $dir = Join-Path ([IO.Path]::GetTempPath()) ('cordon-work.' + [Guid]::NewGuid().ToString('N').Substring(0, 12))
        if (Test-Path -LiteralPath $dir) { return $false }
        [void][IO.Directory]::CreateDirectory($dir)
        $script:WorkDir = $dir
        return $true
    } catch {
        return $false
    }
}

function Remove-WorkDir {
    if ($script:WorkDir -and (Test-Path -LiteralPath $script:WorkDir)) {
        Remove-Item -LiteralPath $script:WorkDir -Recurse -Force -ErrorAction SilentlyContinue
    }
}

# SHA-256 (lower-case hex) of a file. The CryptoServiceProvider class first: it works when the FIPS
# policy is on, where SHA256Managed (what SHA256.Create() returns on .NET Framework) throws.
function Get-Sha256Hex([string]$Path) {
    $stream = $null
    $sha = $null
    try {
        try { $sha = New-Object System.Security.Cryptography.SHA256CryptoServiceProvider } catch { $sha = [System.Security.Cryptography.SHA256]::Create() }
        $stream = [IO.File]::OpenRead($Path)
        return (([BitConverter]::ToString($sha.ComputeHash($stream))) -replace '-', '').ToLowerInvariant()
    } finally {
        if ($stream) { $stream.Dispose() }
        if ($sha) { $sha.Dispose() }
    }
}

# Send-File PATH URL SECONDS: one plain PUT of the file to a presigned URL. Returns '' on success, else
# the reason. HttpWebRequest with write buffering off streams the file: Invoke-WebRequest -InFile buffers
# the whole body in memory in Windows PowerShell (https://github.com/PowerShell/PowerShell/issues/4129),
# which a memory image cannot afford. No header is added (the URL is signed for the host header alone,
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html), no redirect is followed,
# and no exception text is reported, since it can name the URL.
function Send-File([string]$Path, [string]$Url, [int]$Seconds) {
    if ($Seconds -lt 1) { return 'upload failed: no time left in the budget' }
    $in = $null
    $out = $null
    $resp = $null
    try {
        try {
            [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
        } catch { }
        $req = [System.Net.HttpWebRequest]([System.Net.WebRequest]::Create($Url))
        $req.Method = 'PUT'
        $req.AllowAutoRedirect = $false
        $req.AllowWriteStreamBuffering = $false
        $req.SendChunked = $false
        $req.Timeout = $Seconds * 1000
        $req.ReadWriteTimeout = $Seconds * 1000
        $in = [IO.File]::OpenRead($Path)
        $req.ContentLength = $in.Length
        $out = $req.GetRequestStream()
        $in.CopyTo($out, 1048576)
        $out.Close()
        $out = $null
        $resp = $req.GetResponse()
        $code = [int]$resp.StatusCode
        if ($code -ge 200 -and $code -lt 300) { return '' }
        return "upload failed: HTTP $code"
    } catch [System.Net.WebException] {
        $e = $_.Exception
        if ($e.Response) {
            $code = [int]$e.Response.StatusCode
            $e.Response.Close()
            return "upload failed: HTTP $code"
        }
        if ($e.Status -eq [System.Net.WebExceptionStatus]::Timeout) { return "upload failed: timed out after ${Seconds}s" }
        return "upload failed: $($e.Status)"
    } catch {
        return "upload failed: $($_.Exception.GetType().Name)"
    } finally {
        if ($out) { try { $out.Dispose() } catch { } }
        if ($in) { $in.Dispose() }
        if ($resp) { $resp.Close() }
    }
}

function Compress-File([string]$Source, [string]$Target) {
    $in = $null
    $out = $null
    $gz = $null
    try {
        $in = [IO.File]::OpenRead($Source)
        $out = [IO.File]::Create($Target)
        $gz = New-Object System.IO.Compression.GZipStream -ArgumentList $out, ([System.IO.Compression.CompressionMode]::Compress)
        $in.CopyTo($gz, 1048576)
    } finally {
        if ($gz) { $gz.Dispose() }
        if ($out) { $out.Dispose() }
        if ($in) { $in.Dispose() }
    }
}

# ---------------------------------------------------------------------------------------------------
# Memory (the first section)

function Find-MemoryTool {
    foreach ($n in $MemoryToolNames) {
        $c = Get-Command -Name $n -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($c) { return $c.Path }
    }
    foreach ($n in $MemoryToolNames) {
        $p = Join-Path $MemoryToolDir $n
        if (Test-Path -LiteralPath $p -PathType Leaf) { return $p }
    }
    $null
}

# Why memory is not captured ($null when it is).
function Get-MemorySkip {
    $value = [Environment]::GetEnvironmentVariable('CORDON_CAPTURE_MEMORY')
    if ($null -eq $value) { return 'memory capture not requested (CORDON_CAPTURE_MEMORY is unset)' }
    if ($value -ceq '0') { return 'memory capture not requested (CORDON_CAPTURE_MEMORY=0)' }
    if (-not ($value -ceq '1')) { return 'memory capture not requested (CORDON_CAPTURE_MEMORY is set but is neither 0 nor 1)' }
    if ($script:MemoryUrlState -eq 'unset') { return 'no upload URL for the image (CORDON_UPLOAD_MEMORY_URL is unset): an image that cannot be kept is not taken' }
    if ($script:MemoryUrlState -eq 'invalid') { return 'CORDON_UPLOAD_MEMORY_URL is not an http(s) URL of URL-safe characters' }
    $script:MemoryTool = Find-MemoryTool
    if (-not $script:MemoryTool) {
        return ('no memory capture tool: none of {0} is on PATH or in {1} (nothing is installed or downloaded)' -f ($MemoryToolNames -join ', '), $MemoryToolDir)
    }
    $principal = New-Object Security.Principal.WindowsPrincipal -ArgumentList ([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) { return 'memory capture needs administrator rights' }
    try {
        if (Get-Command -Name 'Get-CimInstance' -ErrorAction SilentlyContinue) {
            $cs = Get-CimInstance -ClassName Win32_ComputerSystem -OperationTimeoutSec 60 -ErrorAction Stop
        } else {
            $cs = Get-WmiObject -Class Win32_ComputerSystem -ErrorAction Stop
        }
        $script:MemoryBytes = [long]$cs.TotalPhysicalMemory
    } catch {
        return 'cannot read the size of physical memory (Win32_ComputerSystem)'
    }
    # An image is at least the size of physical memory: refuse before writing gigabytes to the disk.
    if ($script:MemoryBytes -gt $S3SinglePutMaxBytes) {
        return "too large: physical memory is $($script:MemoryBytes) bytes, and an image over 5 GiB cannot be uploaded in one PUT"
    }
    if (-not (New-WorkDir)) { return 'no working directory could be created in the temporary directory' }
    try {
        $free = (New-Object IO.DriveInfo -ArgumentList ([IO.Path]::GetPathRoot($script:WorkDir))).AvailableFreeSpace
    } catch {
        return "cannot determine the free space for $($script:WorkDir)"
    }
    if ($free -lt ($script:MemoryBytes + $MemorySpaceMarginBytes)) {
        return "not enough free space for $($script:WorkDir) ($free bytes free, need physical memory $($script:MemoryBytes) bytes + 1 GiB)"
    }
    $null
}

# The memory section: capture, hash, upload, delete; prints the section, returns the machine line.
function Invoke-MemorySection {
    $script:SectionCount++
    $watch = [Diagnostics.Stopwatch]::StartNew()
    Emit '===== section: memory ====='
    Emit (Protect-Line ('--- budget: {0}s in all, {1}s for memory; collection upload: {2}; memory upload: {3}' -f $script:Budget, $script:MemoryBudget, $script:CollectionUrlState, $script:MemoryUrlState))
    foreach ($n in $script:SettingNotes) { Emit (Protect-Line "--- setting: $n") }
    $skip = Get-MemorySkip
    if ($skip) {
        Emit (Protect-Line "skipped: $skip")
        Emit '===== end-section: memory status=ok elapsed=0s ====='
        return "CORDON_GAP what=memory reason=$skip"
    }
    $line = Invoke-MemoryCapture $watch
    $status = 'ok'
    if ($line -notlike 'CORDON_ARTIFACT *') { $status = 'failed'; $script:FailedCount++ }
    Emit ('===== end-section: memory status={0} elapsed={1}s =====' -f $status, [int]$watch.Elapsed.TotalSeconds)
    $line
}

# Capture, hash, upload and delete; returns the machine line.
function Invoke-MemoryCapture([Diagnostics.Stopwatch]$Watch) {
    $img = Join-Path $script:WorkDir 'memory.raw'
    try {
        $result = Invoke-MemoryCaptureSteps $Watch $img
    } catch {
        $result = "memory capture failed: $($_.Exception.GetType().Name)"
    }
    foreach ($f in $img, (Join-Path $script:WorkDir 'tool.out'), (Join-Path $script:WorkDir 'tool.err')) {
        if (Test-Path -LiteralPath $f) { Remove-Item -LiteralPath $f -Force -ErrorAction SilentlyContinue }
    }
    if ($result -like 'CORDON_ARTIFACT *') { return $result }
    Emit (Protect-Line "--- failed: $result")
    Emit '--- the image (if any) is deleted'
    "CORDON_GAP what=memory reason=$result"
}

# Returns the CORDON_ARTIFACT line, or why there is none. Emits the section's lines.
function Invoke-MemoryCaptureSteps([Diagnostics.Stopwatch]$Watch, [string]$Image) {
    $budget = $script:MemoryBudget
    Emit (Protect-Line ('--- capturing memory with {0} into {1} (physical memory {2} bytes; {3}s for capture, hash and upload)' -f $script:MemoryTool, $Image, $script:MemoryBytes, $budget))
    $secs = [int][Math]::Floor($budget * $MemoryCapturePct / 100) - [int]$Watch.Elapsed.TotalSeconds
    if ($secs -lt 1) { return 'memory budget spent before the capture could start' }
    $p = Start-Process -FilePath $script:MemoryTool -ArgumentList ('"' + $Image + '"') -WorkingDirectory $script:WorkDir `
        -NoNewWindow -PassThru -RedirectStandardOutput (Join-Path $script:WorkDir 'tool.out') `
        -RedirectStandardError (Join-Path $script:WorkDir 'tool.err') -ErrorAction Stop
    $null = $p.Handle   # keeps the process handle, so that ExitCode can be read after the exit
    if (-not $p.WaitForExit($secs * 1000)) {
        try { $p.Kill() } catch { }
        return "the memory tool timed out after ${secs}s"
    }
    foreach ($f in 'tool.out', 'tool.err') {
        $t = Join-Path $script:WorkDir $f
        if (Test-Path -LiteralPath $t) {
            foreach ($l in @(Get-Content -LiteralPath $t -TotalCount 20 -ErrorAction SilentlyContinue)) { Emit (Protect-Line "  $l") }
        }
    }
    if ($p.ExitCode -ne 0) { return "the memory tool failed (exit code $($p.ExitCode))" }
    if (-not (Test-Path -LiteralPath $Image -PathType Leaf)) { return 'the memory tool reported success but wrote no image' }
    $size = (Get-Item -LiteralPath $Image -Force).Length
    Emit "--- capture: raw image of $size bytes after $([int]$Watch.Elapsed.TotalSeconds)s"
    if ($size -le 0) { return 'the memory tool wrote an empty image' }
    if ($size -gt $S3SinglePutMaxBytes) { return "too large: the image is $size bytes, and more than 5 GiB cannot be uploaded in one PUT" }
    $sha = Get-Sha256Hex $Image
    Emit "--- memory image: bytes=$size sha256=$sha format=raw (WinPmem)"
    $err = Send-File $Image $script:MemoryUrl ($budget - [int]$Watch.Elapsed.TotalSeconds)
    if ($err) { return $err }
    Emit '--- uploaded; the image is deleted now'
    "CORDON_ARTIFACT name=memory.lime sha256=$sha bytes=$size"
}

# ---------------------------------------------------------------------------------------------------
# Main

# The sections after memory; Max is the most a section gets.
$Plan = @(
    [pscustomobject]@{ Name = 'identity'; Body = $SecIdentity; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'processes'; Body = $SecProcesses; Max = $ProcessTimeoutSeconds },
    [pscustomobject]@{ Name = 'network'; Body = $SecNetwork; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'logins'; Body = $SecLogins; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'drivers'; Body = $SecDrivers; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'scheduled_tasks'; Body = $SecScheduledTasks; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'services'; Body = $SecServices; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'autoruns'; Body = $SecAutoruns; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'shell_histories'; Body = $SecShellHistories; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'recent_tmp_files'; Body = $SecRecentTmpFiles; Max = $TmpFilesTimeoutSeconds },
    [pscustomobject]@{ Name = 'accounts'; Body = $SecAccounts; Max = $SectionTimeoutSeconds },
    [pscustomobject]@{ Name = 'installed_programs'; Body = $SecInstalledPrograms; Max = $SectionTimeoutSeconds }
)

# Runs the plan so that it ends by $End seconds: each section gets its maximum or, when what is left does
# not cover the maxima of the sections still to run, a proportional share; unused time goes to the next.
function Invoke-Sections([int]$End) {
    $rest = 0
    foreach ($e in $Plan) { $rest += $e.Max }
    foreach ($e in $Plan) {
        $left = $End - (Get-Elapsed)
        $share = 0
        if ($left -ge 1) {
            $share = [int][Math]::Floor($left * $e.Max / $rest)
            if ($share -gt $e.Max) { $share = $e.Max }
        }
        $rest -= $e.Max
        Invoke-Section $e.Name $e.Body $share
    }
}

# Compresses and uploads the collection; prints its machine line. $false when it was not uploaded.
function Send-Collection([string]$Text) {
    $gz = Join-Path $script:WorkDir 'collection.txt.gz'
    try {
        Compress-File $Text $gz
        Remove-Item -LiteralPath $Text -Force -ErrorAction SilentlyContinue
        $sha = Get-Sha256Hex $gz
        $size = (Get-Item -LiteralPath $gz -Force).Length
    } catch {
        Write-MachineLine "CORDON_GAP what=upload reason=compressing or hashing the collection failed: $($_.Exception.GetType().Name)"
        return $false
    }
    # What is left of the budget, but at least 15 s: the sender keeps a minute between the script's
    # budget and SSM's execution timeout for this upload.
    $left = [Math]::Max(15, $script:Budget - (Get-Elapsed))
    $err = Send-File $gz $script:CollectionUrl $left
    if ($err) {
        Write-MachineLine "CORDON_GAP what=upload reason=$err"
        return $false
    }
    Write-MachineLine "CORDON_ARTIFACT name=collection.txt.gz sha256=$sha bytes=$size"
    $true
}

try {
    Read-Settings
    # Where the collection goes: stdout (no URL), a text file in the working directory (then uploaded),
    # or nowhere (a URL was given but cannot be used: the sections are not run, and their output is not
    # printed either, because SSM keeps command output for anyone allowed to read the command history).
    $mode = 'stdout'
    $reserve = 0
    $text = $null
    if ($script:CollectionUrlState -ne 'unset') {
        $why = $null
        if ($script:CollectionUrlState -eq 'invalid') { $why = 'CORDON_UPLOAD_COLLECTION_URL is not an http(s) URL of URL-safe characters' }
        elseif (-not (New-WorkDir)) { $why = 'no working directory could be created in the temporary directory' }
        if ($why) {
            $mode = 'none'
            $script:Out = [IO.TextWriter]::Null
            Write-MachineLine "CORDON_GAP what=upload reason=$why"
        } else {
            $mode = 'upload'
            $text = Join-Path $script:WorkDir 'collection.txt'
            $script:Out = New-Object IO.StreamWriter -ArgumentList $text, $false, (New-Object Text.UTF8Encoding -ArgumentList $false)
            $script:Out.NewLine = "`n"
            $reserve = [Math]::Min($UploadReserveMax, [int][Math]::Floor($script:Budget / 4))
        }
    }
    Emit ("===== cordon-collection: start version={0} utc={1} =====" -f $CordonVersion, (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture))
    # Memory first (order of volatility).
    $memoryLine = Invoke-MemorySection
    if (-not $memoryLine) { $memoryLine = 'CORDON_GAP what=memory reason=the capture did not complete' }
    Write-MachineLine $memoryLine
    if ($mode -ne 'none') { Invoke-Sections ($script:Budget - $reserve) }
    if ($script:NotRun.Count -gt 0) { Write-MachineLine ('CORDON_GAP what=collection reason=not run, the time budget was spent: ' + ($script:NotRun -join ' ')) }
    if ($script:FailedNames.Count -gt 0) { Write-MachineLine ('CORDON_GAP what=collection reason=sections failed (details in the collection): ' + ($script:FailedNames -join ' ')) }
    $summary = "cordon-collection: complete sections=$($script:SectionCount) failed=$($script:FailedCount)"
    Emit $summary
    if ($mode -eq 'upload') {
        $script:Out.Close()
        $script:Out = [Console]::Out
        if (-not (Send-Collection $text)) { $script:ExitCode = 1 }
        Write-MachineLine $summary
    } elseif ($mode -eq 'none') {
        $script:ExitCode = 1
        Write-MachineLine $summary
    }
} finally {
    if ($script:Out -ne [Console]::Out) { try { $script:Out.Close() } catch { } }
    Remove-WorkDir
}
[Console]::Out.Flush()
exit $script:ExitCode
