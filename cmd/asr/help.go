package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/asrlinux/asr/internal/sourceurl"
)

const usageMain = `asr - restore prepared disk images onto disks (Apple Software Restore for Linux)

USAGE
    asr restore   --source SOURCE --target DEVICE --erase [--noprompt] [--noverify] [--puppetstrings]
    asr restore   --source SOURCE --file PATH [--erase] [--noverify]
    asr restore   --source SOURCE --target VOLUME [--noverify] [--puppetstrings]   (file copy)
    asr imagescan --source DISK --output IMAGE [--chunksize BYTES] [--overwrite]
    asr info      --source IMAGE [--plist] [--trusted-key PUB]
    asr sign      --source IMAGE --key KEY [--password-file FILE]
    asr sign      --source IMAGE --remove KEYID
    asr push      --source IMAGE oci://HOST/REPOSITORY:TAG
    asr server    --source IMAGE --config asrconfig.plist [--interface IF]
    asr browse    [--timeout SECONDS] [--interface IF]
    asr help [VERB]
    asr version

VERBS
    restore     erase a disk (or partition, or disk image file) and copy an image onto it,
                then read it back and verify every chunk; without --erase, copy the
                image's files into an existing volume, keeping the volume's other files
    imagescan   turn a raw disk image, compressed disk image or block device into a
                prepared image: chunked, compressed, checksummed, with zeros left out
    info        describe a prepared image: sizes, digest, creation, partition table,
                signatures
    sign        sign a prepared image with a minisign key, so that machines that trust
                the key restore it (and machines that trust keys restore nothing else)
    push        upload a prepared image to an OCI registry, for --source oci://HOST/REPO:TAG
    server      stream a prepared image by multicast to any number of 'asr restore
                --source asr://HOST' clients
    browse      list the asr servers on the network (DNS-SD, _asr._tcp)
    help        print this page, or a verb's manual: asr help restore
    version     print the version

Options take one dash or two: -erase and --erase are the same.
asr needs root to open block devices.

EXIT STATUS
    0 success; 1 the operation failed (the message says why); 2 the command line is wrong.
`

const manRestore = `NAME
    asr restore - restore an image onto a target: block by block (--erase) or file by file

SYNOPSIS
    asr restore --source SOURCE --target TARGET --erase [--delta] [--noprompt] [--noverify]
                [--grow] [--puppetstrings | --log-format json] [--workers N]
                [--trusted-key PUB]... [--trusted-keys-dir DIR]
    asr restore --source SOURCE --file PATH [--erase] [--noverify] [--puppetstrings]
    asr restore --source SOURCE --target VOLUME [--noverify] [--puppetstrings] [--workers N]

DESCRIPTION
    With --erase, copies SOURCE onto TARGET block by block and then verifies the result.
    Without --erase, copies the files of SOURCE's volume into the volume TARGET holds,
    keeping what else is there: see FILE COPY.

    SOURCE is one of
@SOURCES@

    TARGET is a block device (a whole disk such as /dev/sdb, or a partition such as
    /dev/sdb2) or an existing regular file (a virtual machine's disk image). A target
    larger than the source keeps the space beyond the source as it was, but for a GPT:
    its backup header and entries are moved to the end of the target and its last usable
    sector follows them, so a whole-disk image on a larger disk is a valid GPT. An image
    of one partition (a volume) restores onto any partition at least its size.

    --grow then fills the larger target: the partition that ends last (GPT or MBR) is
    enlarged to the end of the disk (to a MiB boundary), and its ext2/3/4 filesystem is
    checked (e2fsck -f -p) and grown (resize2fs), or its NTFS grown by ntfsresize (which
    has Windows run chkdsk at its next boot); for an image of one volume, its filesystem
    is grown to fill the target. F2FS is grown by resize.f2fs; XFS and btrfs grow only
    mounted, so asr mounts them in a private directory and runs xfs_growfs or btrfs
    filesystem resize max (a kernel without their driver cannot grow them). Other
    filesystems are not grown (exFAT, FAT and HFS+ have no tool that grows them): the
    restore still completes and is verified, and asr says so and exits 1.

    The appliance grows the same way when its kernel command line has asr.grow: its
    initramfs carries these tools with their libraries, and the loop, xfs and btrfs
    drivers, so one small image fills each machine's larger disk. It checks the tools
    before writing; a disk exactly the image's size is refused with nothing written.

    With --file PATH, asr writes a new sparse raw disk image file instead of a device.

STEPS
    Validating target     the target exists, is writable, is not mounted, holds no
                          mounted partition, is not swap, not under device-mapper or RAID,
                          not the disk the running system lives on, and can be opened
                          exclusively
    Validating source     the source is readable; a prepared image's magic, version,
                          header checksum, manifest digest and length are checked; source
                          and target are not the same device, nor the image stored on it;
                          when keys are trusted, a trusted key signed the image (see
                          SIGNED IMAGES)
    Validating sizes      the target is at least as large as the source
    Erase contents of TARGET? [ny]
                          asked on a terminal unless --noprompt; with no terminal and
                          no --noprompt, asr refuses
    Comparing             with --delta: the target's chunks are read and hashed, nothing
                          written (see DELTA RESTORE)
    Erasing target device discards the restored range where the device supports it and
                          zeroes the start of the target, so it no longer looks like a disk;
                          with --delta, only the first chunk is blanked and the chunks the
                          image does not store are discarded or zeroed
    Restoring             writes every chunk; chunks that are all zeros are zeroed, not
                          written; chunks that are free space in the image's filesystems
                          (see 'asr help imagescan') are left as the erase left them; the
                          first and last chunk (partition table, superblock, GPT backup)
                          are written last, after a flush; block devices are written
                          past the page cache (O_DIRECT) and flushed every 64 MiB
    Growing               with --grow: the filesystem is grown, after verification
    Verifying             see VERIFICATION

    Nothing is written to the target until every check has passed. A restore that fails
    after writing began exits 1 and leaves the first chunk blank, so the half-written disk
    does not pass as a good one.

DELTA RESTORE
    --delta re-images a target that holds an older (or any) version of the image: after
    the checks and the question, a Comparing step reads the target where the image stores
    data, past the page cache and in parallel, and hashes each chunk (with BLAKE3, or
    SHA-256 for an image made with --hash sha256: as its manifest has them). Nothing is
    written during it: an interruption leaves the target as it was. Only the chunks whose digest differs are then fetched (over
    http(s), range requests for just those chunks, adjacent ones in one request; over
    asr://, the client counts the others as done and finishes as soon as it holds the
    rest, from the stream or by repair) and written. The rest are left as they are.
    Chunks of zeros are punched or zeroed out where the device does that cheaply, and
    otherwise written only if they are not zero already; free space of the image's
    filesystems is discarded where the device can. The safety story is unchanged: the
    first chunk is blanked before anything else is written and written last, even when
    it matched, so an interrupted delta restore leaves a disk that does not look valid
    (run it again); verification reads back every written chunk past the page cache
    against the checked bytes written. A reused chunk was verified by the comparison
    (its hash, on a read past the page cache, before anything was written); the ones
    next to a range the restore wrote, zeroed or discarded are read again and must still
    have the CRC-32C they had then, which catches a write that ran past its range; the
    others are not read twice, as a full restore does not read a chunk twice. The
    summary says how many chunks were reused, fetched (and their bytes) and written.
    --delta needs a prepared image (a raw image or a device has no digests to compare)
    and an existing --target; onto an empty or unrelated disk it is a full restore with
    the cost of one extra read of the target.

VERIFICATION
    Each chunk asr writes was checked against its hash first (BLAKE3 or SHA-256, from
    the image's manifest; BLAKE3 computed while reading a raw source). Right after writing it, asr reads
    it back from the target bypassing the page cache (O_DIRECT) and compares it byte for
    byte with what it wrote, while the next chunks are read and decoded. After the final
    flush it reads back the rest the same way: a zero chunk must read as zeros, the first
    and last chunk (written last) must have their digests, and so must a reused chunk of
    --delta that lies next to a written one (see --delta above).
    Where the target cannot be read with O_DIRECT (a file on some filesystems), the
    whole restored range is read back after the final flush and after dropping the
    cached pages, and each chunk checked against its digest. Free space of the image's
    filesystems was not written and is not read: the summary then says "Verified N of
    used data". A GPT adjusted for a larger
    target is checked as written (its first chunk against its new digest, the moved
    backup byte for byte). A mismatch fails with the byte range, and the first chunk is
    blanked. Other bytes beyond the source's size are not read. --noverify skips this step
    and says so.

OPTIONS
@OPTIONS@

SIGNED IMAGES
    When any key is trusted (--trusted-key, or a .pub file in the trusted keys
    directory), asr restores only prepared images that carry a valid signature by one
    of them ('asr help sign'). The check is part of Validating source, before the target
    is erased or written, and holds for every source: a local file, a prepared image on
    a USB stick, http(s):// (the signatures are fetched from the end of the file with a
    range request; a server that ignores Range is refused, since the signatures could
    only be read after the disk was written), oci:// (the same, on the registry's blob,
    which 'asr push' uploads signatures included) and asr:// (the server hands the
    signatures to each client with the image's manifest). A refused image exits 1 with a
    message that names every key ID that signed it and why each did not count (key not
    trusted here, or BAD SIGNATURE: it does not match this image, as when a chunk was
    changed or the signature was copied from another image), and the target is
    untouched. On success asr prints the signer:
      Signed by key ID 3A5F0B2C9D1E4F60 (trusted)
    A raw image file or a block device on this machine (a clone) carries no signature:
    it is restored with the line "not signature-checked". A raw image over http(s) is
    refused when keys are trusted. With no key trusted, nothing is checked; a signed
    image's signers are printed as "not checked".

FILE COPY (no --erase)
    asr restore --source SOURCE --target VOLUME copies every item of the source volume
    into the target volume: an item of the same name is replaced whatever its age (a
    folder by a file too, with what it held, and a file by a folder), new items are
    added, and items only on the target are kept. It is slower than --erase, which
    copies blocks, but it is the way to lay a system over a volume whose data must stay.

    SOURCE is a prepared image, a raw disk image, a block device or a mounted volume
    (a folder). The image or device holds one filesystem, or a disk with exactly one
    partition; for a disk with several, give the partition's device (for an image file:
    losetup -P -r -f IMAGE, then partx -a on the loop device). A prepared image, a
    compressed raw image and an http(s)://, oci:// or asr:// source are first unpacked into a
    sparse file in the temporary folder ($TMPDIR, else /tmp; it needs room for the
    image's used bytes, and is removed afterwards), so that it can be mounted.

    VOLUME is a block device holding a filesystem (ext2/3/4, FAT, XFS, btrfs, as the
    kernel can mount them) or a mounted volume (a folder).

    asr mounts what is not mounted and unmounts it afterwards: the source read-only,
    through a read-only loop device, so not even a journal replay writes to it (an ext4
    volume whose journal needs replaying is read as of its last commit); the target
    read-only until every check has passed, then read-write. Mount points are folders
    asr-source-* and asr-target-* in the temporary folder.

    Preserved: content, mode (setuid, setgid, sticky included), owner, group,
    modification and access times, symlinks, hard links, device nodes, FIFOs, sockets,
    extended attributes, POSIX ACLs (which are extended attributes), security labels
    and file capabilities, and holes in sparse files. Not crossed: other volumes mounted
    inside the source (listed). Folder times are set last, after their contents.

    Every item other than a folder is written under a temporary name (.asr-tmp-*) in its
    own folder and renamed over the old one when complete: an item is the old one or
    the whole new one, never half-written. The copy ends with a flush of the target
    filesystem (syncfs), which reports any write error met on the way.

    Checks, before anything on the target changes: the target is not the running
    system's root filesystem (nor a folder on it); the source is not mounted read-write
    (it could change during the copy); source and target are not the same volume; the
    target has room for what the copy writes (its used blocks, less what replaced files
    free, plus room to write the largest file beside the one it replaces) and enough
    free inodes. A copy that fails midway (an I/O error, a file the target refuses)
    stops and names the item; items copied before it are complete.

    FAT targets hold no owners, groups, permissions beyond a read-only flag, extended
    attributes or ACLs, symlinks, hard links, device nodes, FIFOs or sockets, and keep
    times to 2 s. asr warns, listing how many source items of each kind FAT cannot
    hold; those are not copied, hard-linked names become separate copies, and a file
    without its owner's write permission becomes read-only. Verification then compares
    only kind, size, content and modification time.

    Verification (unless --noverify) compares each copied item with the source: kind,
    mode, owner, group, modification time, size, content (the target's cached pages
    are dropped first, so its bytes are read from the device), symlink target, device
    number, extended attributes, and that hard links share one inode.

    Progress counts bytes and items; the summary gives the items replaced, added and
    kept (a kept folder counts once). asr keeps about 130 bytes of memory per source
    item (a tree of 630,000 items: 134 MiB at most).

PUPPETSTRINGS
    One line per event, tab-separated, unbuffered:
      PSTART <phase>            a phase begins (validating_target, restoring, verifying, ...)
      PPROG  <phase> <percent>  progress, 0 to 100, each whole percent once
      PSTOP  <phase>            the phase ended successfully
      PINFO  <text>             a line for people (the summary)
      PERROR <text>             the phase failed; the process exits nonzero

LOG FORMAT
    --log-format json prints one JSON object per line on standard output, for a log
    collector (Loki, Elasticsearch), instead of the lines above; it does not ask
    before erasing (give --noprompt). A failure still ends with its "asr: ..." line on
    standard error. Every object has "time" (RFC 3339), "level" (INFO or ERROR), "msg"
    (the line a person would read) and "event", one of:
      started    source, target, erase, verify, version
      step       a phase begins: phase (validating_target, erasing, restoring,
                 verifying, ...), total for a long phase (bytes)
      source     the source opened: source, kind, size, and for a prepared image its
                 image (the name it was scanned from) and digest
      progress   phase, percent, done, total, rate (bytes/s), eta_s; each whole
                 percent once, and every 5 s while it does not move
      step_done  phase, elapsed_s
      info       a line for people (the summary, a note)
      done       the last record of a success: target, size, data_bytes, chunks,
                 zero_chunks, unused_bytes, elapsed_s, verified, verified_bytes, verify_s
                 (a file copy: items, bytes, replaced, added, kept instead of the blocks)
      failed     the last record of a failure: reason, exit_code, and the phase that
                 failed if one had begun; a wrong command line gives one too
    For example:
      {"time":"2026-11-26T10:00:01.2Z","level":"INFO","msg":"Restoring 42%","event":"progress",
       "phase":"restoring","percent":42,"done":440401920,"total":1048576000,"rate":91750400,"eta_s":6.6}
      {"time":"2026-11-26T10:00:09.8Z","level":"ERROR","msg":"...","event":"failed",
       "reason":"...","exit_code":1,"phase":"restoring"}
    Strings from the source (an image's name) are cut to 256 bytes; JSON escapes them.

EXAMPLES
    asr restore --source /srv/lab.asr --target /dev/sdb --erase
    asr restore --source /dev/sda --target /dev/sdb --erase --noprompt     (clone)
    asr restore --source disk.img.xz --file /var/lib/vm/disk.raw
    asr restore --source /srv/lab.asr --target /dev/sdb2                   (file copy)
    asr restore --source /dev/sdc1 --target /mnt/data                      (file copy)
    asr restore --source https://images.example/lab.asr --target /dev/sdb --erase \
                --trusted-key /etc/asr/admin.pub                          (signed only)
`

const manImagescan = `NAME
    asr imagescan - make a prepared image from a disk

SYNOPSIS
    asr imagescan --source DISK --output IMAGE [--chunksize BYTES] [--level fast|default|best]
                  [--hash blake3|sha256] [--allblocks] [--overwrite] [--puppetstrings]
                  [--sign KEY [--password-file FILE]]

DESCRIPTION
    Reads DISK from start to end and writes IMAGE, a prepared image: the disk cut into
    chunks, each compressed with zstd on all cores and named by the BLAKE3 hash of its
    bytes (b3sum prints the same; --hash sha256 uses SHA-256, for asr versions that
    predate BLAKE3 images, at twice the hashing cost in every restore); chunks that are
    all zeros are not stored. Each chunk is compressed on its own, so
    larger chunks compress better: a disk of 1 GiB or more gets 8 MiB chunks, a smaller
    one at least 128 chunks of at least 1 MiB, and a disk whose size is not known in
    advance 1 MiB chunks (--chunksize chooses). The chunk is also what a --delta restore
    fetches when any byte of it changed: for images mostly re-imaged by delta, smaller
    chunks (--chunksize 1048576) fetch less after scattered changes, at a few percent of
    image size. A manifest at the front lists every chunk, and the SHA-256 of the
    manifest is the image's digest.

    DISK is a raw disk image, a raw image compressed with gzip, xz or zstd, or a block
    device (a whole disk with its partitions, or one partition). Unmount it, or mount it
    read-only, while it is scanned: a filesystem that changes during the scan gives an
    image of no consistent moment.

    DISK may also be a VM or cloud disk image: qcow2, VMDK, VHD, VHDX or VDI, known by
    its magic, not its name. qemu-img (Debian's qemu-utils) converts it first to a raw
    copy in IMAGE's directory, which has no name and is gone when the scan ends, however
    it ends; it takes as much space as the disk's allocated data. An image that names
    other files (a backing file, a differencing disk's parent, an external data file or
    extent) is refused: flatten it first with 'qemu-img convert -O qcow2 DISK flat.qcow2'.
    The image made from it is the one the raw disk gives, digest included.

    Before reading the data, imagescan maps which bytes matter, from the disk's own
    metadata: the partition table (MBR or GPT, both GPT copies kept), and in each
    partition its filesystem's allocation maps: ext2/3/4 block bitmaps (flex_bg, meta_bg
    and uninitialised groups included), the FAT of FAT12/16/32, NTFS's $Bitmap, exFAT's
    allocation bitmap, the HFS+/HFSX allocation file (a volume not cleanly unmounted,
    marked inconsistent or with a journal to replay is kept whole: Debian 12 packages no
    HFS+ checker, fsck.hfsplus, to repair it; macOS's fsck_hfs, or a clean mount and
    unmount, does), the header of a Linux swap area. Free space is not stored, whatever old data it holds: chunks with no used
    byte are marked unused, and free bytes inside used chunks are stored as zeros. A
    restore then leaves free space as the erase left it, and verification checks the
    used data only. Areas asr cannot map (other filesystems, bytes outside any
    partition, an ext filesystem whose journal needs replaying, damaged metadata) keep
    every non-zero chunk, and imagescan prints a warning naming the area and the reason.
    One line per area says which method mapped it and how much it uses; 'asr info'
    shows the same.

    An LVM2 physical volume is mapped by its own metadata: its label and metadata areas
    are kept, unallocated extents are free, and each logical volume lying wholly on it in
    linear or striped segments is mapped by the filesystem it holds. Thin pools, RAID
    and mirror volumes, snapshots and volumes reaching onto other physical volumes are
    kept whole, with a note. Encrypted volumes (LUKS1, LUKS2, BitLocker) are recognised
    and kept whole: the note says "encrypted".

    A compressed DISK (gzip, xz, zstd) reads only in order, so it is first decompressed
    once into a temporary file beside IMAGE (sparse: its zeros take no room), then mapped
    and scanned from there like a plain disk, giving the same image. The file has no
    name and vanishes when imagescan ends, however it ends (an error, Ctrl-C, a kill).
    Where it cannot be made (less than 512 MiB would be left free, or the folder is a
    tmpfs, held in memory), imagescan says so and keeps every non-zero chunk instead.

    --level sets how hard chunks are compressed; it changes the image's size and the
    scan's time, never how it restores (the image does not record it, and 'asr restore'
    reads every level the same way). The default is the level whose chunks decode
    fastest, so restores, which run many times, cost the least. On a 512 MiB ext4 disk
    43% full of text, programs and random data, measured against the default: fast
    scans in 40% of the time, makes a 5% larger image and decodes 17% slower; best makes
    a 4% smaller image, takes 5 times as long to scan and decodes 19% slower.

    The same disk scanned with the same options gives the same image, byte for byte.
    The creation time recorded is SOURCE_DATE_EPOCH if set, else the source file's
    modification time, else (a device) the current time.

    The image is written under a temporary name beside IMAGE and renamed when complete.

OPTIONS
@OPTIONS@

EXAMPLES
    asr imagescan --source /dev/sda --output /srv/images/lab-2026.asr
    asr imagescan --source /dev/sda --output /srv/images/lab-2026.asr --sign ~/.minisign/minisign.key
    asr imagescan --source /dev/sda --output /srv/images/lab-2026.asr --level best
`

const manInfo = `NAME
    asr info - describe a prepared image

SYNOPSIS
    asr info --source IMAGE [--plist] [--trusted-key PUB]... [--trusted-keys-dir DIR] [--timeout SECONDS] ...

DESCRIPTION
    Checks IMAGE's header and manifest and prints its logical size, chunk size and count,
    stored and used bytes, compression ratio, digest, creation time, the asr version that
    made it, a summary of its partition table, and its signatures. --plist prints the
    same as an XML property list. IMAGE may be any source 'asr restore' takes (see
    'asr help restore').

    Each signature is shown with its key ID and what it is worth here, with the keys
    trusted as 'asr restore' trusts them (--trusted-key, --trusted-keys-dir, default
    /etc/asr/trusted-keys):
      key ID 3A5F0B2C9D1E4F60: trusted, valid (timestamp:1764640000  asr image digest ...)
      key ID 77E1C2D3A4B5C6D7: key not trusted here
      key ID 3A5F0B2C9D1E4F60: BAD SIGNATURE: does not match this image
    A signature by a key not trusted here cannot be checked: give the key with
    --trusted-key to check it. "Signatures: none" means the image is unsigned.

OPTIONS
@OPTIONS@
`

const manServer = `NAME
    asr server - stream a prepared image to many machines by multicast

SYNOPSIS
    asr server --source IMAGE --config asrconfig.plist [--interface IF] [--parity PCT]
               [--http ADDR] [--log-format json]

DESCRIPTION
    Listens for clients on a TCP port and, once the first one asks, sends IMAGE to a
    multicast group at a fixed rate, over and over, until stopped with Ctrl-C (SIGINT)
    or SIGTERM. Clients ('asr restore --source asr://HOST --target DISK --erase') join at
    any point of the loop and leave when they have every chunk, so a thousand machines
    restore in about the time of one.

    Every packet carries the stream's identity (the image digest and a number chosen
    at start), so a client never takes data of another image or another server run.
    Each chunk is sent with Reed-Solomon parity (--parity, default 5%), so a few percent
    of lost packets are repaired in the same pass. A client that still lacks chunks after
    a full pass fetches them over its TCP connection (up to a tenth of the image) instead
    of waiting for the next loop.

STATUS
    Each client reports over its TCP connection: its name (host name, or MAC address on
    the appliance), the MAC address of its network card, its target disk, and its state:
    joined, percent restored (when it moves, at most once a second, and every 5 s while
    it waits), verifying, done, or failed with the reason (a target too small is reported
    before anything is written). A connection that closes before done or failed shows
    as lost. On a terminal the server keeps a live table below its log, redrawn in place
    each second, one row per client:
      CLIENT  MAC  DISK  STATE  %  RATE  ETA  LAST SEEN
    followed by a count of clients per state. Past 40 clients the table shows 40 rows,
    clients still at work first; the count covers them all. When its output is not a terminal (a log
    file, journald) it writes plain lines instead: joined, every 10%, done and failed.
    SIGUSR1 (kill -USR1 PID) prints the table into the log, as dd prints its progress, and
    the server prints it once more when it stops. The server keeps one small record per
    client and nothing more.

DASHBOARD
    --http ADDR (or the HTTP Address key) serves, on ADDR (an IP address and port of this
    machine, e.g. 198.18.0.1:8080), what the table shows for a browser and for scripts:
      /              a live page: the image (name, size, digest, signer), the stream
                     (rate, pass, clients listening) and one row per client (name, MAC,
                     address, disk, state, progress, rate, ETA, last seen, why it
                     failed), updated each second without reloading; works on a phone
      /metrics       Prometheus metrics: asr_server_clients{state}, bytes and packets
                     sent, passes, repairs, control connections, packets the clients
                     report ignoring (foreign, malformed) and chunks that failed their
                     check, asr_build_info
      /api/clients   the client table as JSON; /api/image: the image and the stream
    Everything is embedded in asr: no internet access is needed. It is read-only and has
    NO AUTHENTICATION: anyone who reaches ADDR sees the machines' names and addresses,
    so give it an address on the imaging network, not on a public one. At most 64 pages
    are live at once, and a page that stops reading is dropped.

CONFIGURATION
    A property list (XML or binary, as written by 'defaults write' or plutil) with Apple's
    asr keys:
      Multicast Address       string, required: the group, e.g. 239.255.1.1
      Data Rate               integer, required: bytes per second on the wire, e.g. 6000000
      Client Data Rate        integer: the slowest client's disk speed in bytes per second;
                              the stream is sent at the lower of the two rates
      DNS Service Discovery   boolean, default true: advertise _asr._tcp over mDNS, with
                              the image's name, digest and signers (signer=KEYID,...)
                              in the TXT record ('asr browse', avahi-browse -r
                              _asr._tcp and dns-sd list it)
      Loop Suspend            integer, default 0: pause after this many passes with no
                              client listening (0: only stop looping when nobody ever came)
      Multicast TTL           integer, default 3: router hops the stream may cross
      Port                    integer, default 7800: the TCP control port; data goes to
                              the group on Port+1
    and keys of asr for Linux, which Apple's asr ignores:
      HTTP Address            string: IP:port to serve the dashboard on, as --http does
                              (see DASHBOARD; --http overrides it)
      Minimum Clients         integer 1 to 512, default 1: start the stream (and restart it
                              after Loop Suspend) only once this many clients have joined,
                              so that a lab powered on together gets one pass, not one for
                              the first machine and another for the rest (udp-sender's
                              --min-receivers). Clients that wait are told so: they neither
                              time out nor fetch the image over TCP meanwhile
      Client Wait             integer, seconds, default 300: with Minimum Clients, start
                              anyway this long after the first client joined, with those
                              that came (udp-sender's --max-wait); at most 86400
    Unknown keys are warned about; a missing required key, a wrong type, an address that
    is not multicast, or a rate of 0 is refused naming the key.

    Example:
      <?xml version="1.0" encoding="UTF-8"?>
      <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
      <plist version="1.0"><dict>
        <key>Multicast Address</key><string>239.255.1.1</string>
        <key>Data Rate</key><integer>25000000</integer>
      </dict></plist>

OPTIONS
@OPTIONS@

SIGNATURES
    A signed image ('asr help sign') is served with its signatures: the log says
    "Image signed by key ID X" (or "Image unsigned"), the client table's first line says
    the same, and each client receives the signatures with the image's manifest, so a
    client that trusts keys checks them before it erases its disk. The server itself
    trusts nothing: it serves what it is given. An image whose bytes after the last
    chunk are not a valid signature trailer is refused at start.

LOG FORMAT
    --log-format json prints one JSON object per line on standard output instead, for a
    log collector (Loki, Elasticsearch); there is no live table then. Every object has
    "time" (RFC 3339), "level" (INFO, WARN, ERROR), "msg" (the line OUTPUT shows) and
    "event":
      started        image, size, digest, signed, group, port, control_port, rate, ttl,
                     version
      joined         a client is in the group, waiting for data
      progress       a client's percentage crossed a tenth
      done           a client restored and verified its disk
      failed         (WARN) a client stopped; reason says why
      lost           (WARN) a client's connection closed before done or failed
                     These five have client_id (in order of arrival), client (its name),
                     mac, addr, disk, state, percent, and when known reason, rate
                     (bytes/s), eta_s, elapsed_s (since its hello)
      pass           a pass of the image was sent: pass, bytes, elapsed_s
      client_status  on SIGUSR1 and at stop, one per client the server holds (fields as
                     joined)
      clients        after them: total, and states, the count by state
      stopped        the last record: uptime_s
      log, warning   any other line (Ready to start accepting clients, a config warning)
      failed         (no client fields) the server itself failed: reason, exit_code
    What clients sent (name, MAC, disk, reason) is cut to 256 bytes and escaped by JSON.
    For example:
      {"time":"2026-11-26T10:02:11Z","level":"WARN","msg":"Client 198.18.0.11 (lab-pc-07)
       failed: ...","event":"failed","client_id":7,"client":"lab-pc-07",
       "mac":"52:54:00:12:34:0a","addr":"198.18.0.11","disk":"/dev/sda (256.0 GiB)",
       "state":"failed","percent":40,"reason":"..."}

OUTPUT
    Image signed by key ID 3A5F0B2C9D1E4F60: clients that trust keys check this before erasing anything
    Ready to start accepting clients
    Starting stream 2026-11-26 10:00:00 +0000      (each pass)
    Client 198.18.0.11 (lab-pc-07) joined / NN% / done / failed: reason
    Dashboard on http://198.18.0.1:8080/ (...)     (with --http)
`

const manBrowse = `NAME
    asr browse - list the asr servers on the network

SYNOPSIS
    asr browse [--timeout SECONDS] [--interface IF]

DESCRIPTION
    Asks over multicast DNS for DNS-SD services of type _asr._tcp (what 'asr server'
    advertises unless its configuration sets DNS Service Discovery to false), waits
    --timeout seconds (default 3) for answers, and prints one line per server: its name,
    the asr:// source to restore from, the image it serves, the start of its digest and
    the key IDs that signed it (or "unsigned"). The signer column is what the server
    advertises, not a checked fact: 'asr restore' checks the signatures themselves.
    Exits 1 when nobody answered.

OPTIONS
@OPTIONS@
`

// runHelp prints the main page, or a verb's manual: the verb runs with -h,
// so that its OPTIONS come from the flags it defines (see expand), and a
// new verb has its manual here with nothing to add.
func runHelp(e env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stdout, usageMain)
		return nil
	}
	verb := args[0]
	if verb != "help" && verb != "version" && !strings.HasPrefix(verb, "-") {
		if err := runVerb(context.Background(), e, []string{verb, "-h"}); errors.Is(err, flag.ErrHelp) {
			return nil
		}
	}
	return usageError("help: no manual for %q (see 'asr help' for the verbs)", verb)
}

// expand fills a manual's generated parts: @SOURCES@, the kinds of source
// (sourceurl.Schemes), and @OPTIONS@, every flag fs defines with its usage
// string, so a flag cannot be left out of its verb's manual.
func expand(manual string, fs *flag.FlagSet) string {
	manual = strings.Replace(manual, "@SOURCES@\n", sourceurl.Help("      "), 1)
	return strings.Replace(manual, "@OPTIONS@\n", options(fs), 1)
}

// options lists fs's flags, sorted, as the OPTIONS section shows them:
//
//	--name ARG          usage, wrapped (default D)
//
// ARG is the backquoted word of the usage (flag.UnquoteUsage); a flag with
// no usage string is listed as UNDOCUMENTED, which a test catches.
func options(fs *flag.FlagSet) string {
	const indent, width = 24, 92
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if usage == "" {
			usage = "UNDOCUMENTED"
		}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			usage += " (default " + f.DefValue + ")"
		}
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		head := "    --" + f.Name
		if arg != "" {
			head += " " + arg
		}
		line := head
		if len(head) >= indent-1 {
			b.WriteString(head + "\n")
			line = ""
		}
		for _, w := range strings.Fields(usage) {
			switch {
			case line == "":
				line = strings.Repeat(" ", indent) + w
			case len(line) < indent:
				line += strings.Repeat(" ", indent-len(line)) + w
			case len(line)+1+len(w) > width:
				b.WriteString(line + "\n")
				line = strings.Repeat(" ", indent) + w
			default:
				line += " " + w
			}
		}
		b.WriteString(line + "\n")
	})
	return b.String()
}

const manSign = `NAME
    asr sign - sign a prepared image with a minisign key

SYNOPSIS
    asr sign --source IMAGE --key KEY [--password-file FILE]
    asr sign --source IMAGE --remove KEYID
    asr sign --source IMAGE --minisig OUT.minisig [--key-id KEYID]
    asr sign --source IMAGE --add-minisig FILE

DESCRIPTION
    Signs IMAGE with the minisign secret key KEY and stores the signature in the image
    file itself, after its last chunk: a signed image is still one file to copy. What
    is signed is the image's 64-byte header, which holds the image digest, which covers
    the manifest and so the hash of every chunk: change one byte of the disk and the
    signature no longer matches. Signing does not change the image digest, and
    re-signing or removing signatures does not either.

    An image holds up to 8 signatures, one per key: signing with a second key adds a
    signature (key rotation: sign with the new key, move the machines to it, then remove
    the old one), and signing again with the same key replaces its signature.

    Machines that trust a key ('asr restore --trusted-key PUB', /etc/asr/trusted-keys,
    an appliance built with TRUSTED_KEYS) restore only images that key signed: see
    SIGNED IMAGES in 'asr help restore'.

    The appliance: 'make initramfs TRUSTED_KEYS="a.pub b.pub"' (or make usb-image)
    bakes those public keys into its /etc/asr/trusted-keys, checked at build time. It
    then refuses, on every source (asr.source=, DHCP option 224, DNS-SD, the USB stick),
    unsigned images, images signed by other keys, raw images and clones, before the
    disk is touched: the console says which key IDs signed what it refused, and it
    stops. DNS-SD leaves out servers whose image no trusted key signed.

SECURE BOOT
    The appliance boots with UEFI Secure Boot on, from the USB stick (make usb-image)
    or the network (appliance/examples: shim, GRUB and the appliance by TFTP), through
    Debian's signed chain: the firmware checks shim (signed by Microsoft), shim checks
    GRUB and GRUB, through shim, the kernel (signed by Debian), which then loads only
    signed modules and locks itself down. Use Debian's signed kernel (linux-image-amd64):
    an unsigned one is refused ("bad shim signature") and the disk is not touched.
    That is all Secure Boot covers. Nobody checks the initramfs, which holds asr and its
    trusted keys, nor the kernel command line (asr.source=, asr.target=...): whoever can
    write the stick or the boot server can change the appliance. What keeps a machine
    from restoring a foreign image is asr's own check of its signatures against the
    keys baked in with TRUSTED_KEYS, so guard the stick and the boot server as well as
    the signing key.

KEYS
    Keys are minisign's: make a pair with
      minisign -G -p admin.pub -s admin.key          (asks for a password)
      minisign -G -W -p admin.pub -s admin.key       (no password: for automation)
    Keep admin.key secret; give admin.pub to the machines. asr shows a key by its ID,
    the hex number minisign prints ("minisign public key 3A5F0B2C9D1E4F60").

    A password-protected key's password is read from --password-file (its first line),
    else from the environment variable ASR_KEY_PASSWORD, else asked on the terminal
    without echo. Unlocking takes a few seconds and up to 1 GiB of memory: minisign's
    key derivation is made to be slow.

CHECKING WITH MINISIGN
    The signed message is the image's first 64 bytes, so minisign checks an asr
    signature on a file holding exactly those bytes:
      asr sign --source lab.asr --minisig lab.header.minisig
      minisign -V -p admin.pub -m lab.header -x lab.header.minisig
    --minisig writes the signature (of --key-id's key when there are several) to OUT and
    the 64 signed bytes to OUT without .minisig; 'head -c 64 lab.asr > lab.header' gives
    the same bytes. minisign prints the trusted comment, which names the image digest.
    The other way round, a signature that 'minisign -S -m lab.header' made can be added
    with --add-minisig. FORMAT.md describes the trailer.

OPTIONS
@OPTIONS@
OUTPUT
    Signed lab.asr (digest sha256:...) with key ID 3A5F0B2C9D1E4F60; it has 1 signature,
    by key ID 3A5F0B2C9D1E4F60

    Sign an image before publishing it: a client that fetches it from a web server
    while it is being signed may find no valid signature and refuse it. 'asr server'
    reads the signatures once, when it starts.

EXAMPLES
    asr sign --source /srv/images/lab.asr --key ~/.minisign/minisign.key
    ASR_KEY_PASSWORD=... asr sign --source lab.asr --key ci.key
    asr sign --source lab.asr --remove 3A5F0B2C9D1E4F60
`
