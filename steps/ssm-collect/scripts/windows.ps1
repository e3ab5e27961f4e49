# cordon-collection: OS-level forensic collection for a suspected compromised Windows EC2 instance.
#
# Sent unchanged by SSM Run Command (AWS-RunPowerShellScript); its output goes to S3. See README.md.
#
# Guarantees (keep them when editing):
#   * Read-only. It only reads (CIM/WMI queries, event logs, the registry, files) and writes to its own
#     output. It installs, downloads, starts, stops and changes nothing. It never queries Win32_Product
#     (that class triggers MSI consistency checks and repairs); installed programs come from the
#     registry's Uninstall keys.
#   * No interpolation of the request. It takes no parameters. Its only input is the environment
#     variable CORDON_CAPTURE_MEMORY, compared literally (case-sensitively) with the string "1"; it is
#     never evaluated and never printed.
#   * Bounded. Each section runs in a background job with a time limit (in-process, with its own
#     deadline checks, if jobs are unavailable) and its output is capped in size.
#   * Not fatal. A failed step is reported in its section; the script goes on and exits 0 whenever the
#     collection ran.
#
# Output: "===== section: NAME =====" ... "===== end-section: NAME status=ok|failed|truncated ... =====",
# then one last line "cordon-collection: complete sections=N failed=M". Section content is sanitised the
# same way as linux.sh: control characters become "?", crypt(3)-style hashes are redacted, and content
# lines that would look like these structural lines are indented by two spaces.

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
$SectionMaxChars = 4194304

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

function Emit([string]$Line) { [Console]::Out.WriteLine($Line) }

# Control characters become "?", crypt(3)-style hashes are redacted, marker look-alikes are indented.
function Protect-Line([string]$Line) {
    $l = $Line -replace '[\x00-\x08\x0B-\x1F\x7F]', '?'
    $l = $l -replace '\$(1|2[abxy]|5|6|7|y|gy|sha1|md5)\$[./A-Za-z0-9$=,+-]*', '[REDACTED-CRYPT-HASH]'
    if ($l -match '^(=====|cordon-collection:)') { $l = '  ' + $l }
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

function Invoke-Section([string]$Name, [scriptblock]$Body, [int]$TimeoutSeconds) {
    $script:SectionCount++
    Emit "===== section: $Name ====="
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
    if ($problem -or ($fails -gt 0)) { $status = 'failed'; $script:FailedCount++ }
    elseif ($truncated) { $status = 'truncated' }
    Emit ("===== end-section: {0} status={1} elapsed={2}s =====" -f $Name, $status, [int]$watch.Elapsed.TotalSeconds)
}

function Invoke-MemorySection {
    $script:SectionCount++
    Emit '===== section: memory ====='
    $value = [Environment]::GetEnvironmentVariable('CORDON_CAPTURE_MEMORY')
    if ($null -eq $value) {
        Emit 'skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is unset); AVML is Linux-only, there is no Windows capture tool in this script'
    } elseif ($value -ceq '1') {
        Emit 'skipped: memory capture requested, but AVML is Linux-only and this script has no Windows memory acquisition tool (nothing is installed or downloaded)'
    } else {
        Emit 'skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is set but is not exactly 1); AVML is Linux-only'
    }
    Emit '===== end-section: memory status=ok elapsed=0s ====='
}

Emit ("===== cordon-collection: start version={0} utc={1} =====" -f $CordonVersion, (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture))
Invoke-Section 'identity' $SecIdentity $SectionTimeoutSeconds
Invoke-Section 'processes' $SecProcesses $ProcessTimeoutSeconds
Invoke-Section 'network' $SecNetwork $SectionTimeoutSeconds
Invoke-Section 'logins' $SecLogins $SectionTimeoutSeconds
Invoke-Section 'drivers' $SecDrivers $SectionTimeoutSeconds
Invoke-Section 'scheduled_tasks' $SecScheduledTasks $SectionTimeoutSeconds
Invoke-Section 'services' $SecServices $SectionTimeoutSeconds
Invoke-Section 'autoruns' $SecAutoruns $SectionTimeoutSeconds
Invoke-Section 'shell_histories' $SecShellHistories $SectionTimeoutSeconds
Invoke-Section 'recent_tmp_files' $SecRecentTmpFiles ($SectionTimeoutSeconds + 60)
Invoke-Section 'accounts' $SecAccounts $SectionTimeoutSeconds
Invoke-Section 'installed_programs' $SecInstalledPrograms $SectionTimeoutSeconds
Invoke-MemorySection
Emit ("cordon-collection: complete sections={0} failed={1}" -f $script:SectionCount, $script:FailedCount)
[Console]::Out.Flush()
exit 0
