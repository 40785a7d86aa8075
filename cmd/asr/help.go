package main

import "fmt"

const usageMain = `asr - restore prepared disk images onto disks (Apple Software Restore for Linux)

USAGE
    asr restore   --source SOURCE --target DEVICE --erase [--noprompt] [--noverify] [--puppetstrings]
    asr restore   --source SOURCE --file PATH [--erase] [--noverify]
    asr restore   --source SOURCE --target VOLUME [--noverify] [--puppetstrings]   (file copy)
    asr imagescan --source DISK --output IMAGE [--chunksize BYTES] [--overwrite]
    asr info      --source IMAGE [--plist]
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
    info        describe a prepared image: sizes, digest, creation, partition table
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
    asr restore --source SOURCE --target TARGET --erase [--noprompt] [--noverify] [--grow]
                [--puppetstrings] [--workers N]
    asr restore --source SOURCE --file PATH [--erase] [--noverify] [--puppetstrings]
    asr restore --source SOURCE --target VOLUME [--noverify] [--puppetstrings] [--workers N]

DESCRIPTION
    With --erase, copies SOURCE onto TARGET block by block and then verifies the result.
    Without --erase, copies the files of SOURCE's volume into the volume TARGET holds,
    keeping what else is there: see FILE COPY.

    SOURCE is one of
      a prepared image    made by 'asr imagescan' (fastest: zeros are skipped, chunks are
                          decoded in parallel and checked against their SHA-256 before
                          they are written)
      a raw disk image    a plain file, or one compressed with gzip, xz or zstd (recognised
                          by content, not name; a compressed image is read once first to
                          learn its size, because nothing is written before every check).
                          A file named *.asr is always taken for a prepared image, so a
                          damaged one is refused rather than restored as raw bytes
      a block device      a clone: a whole disk or one partition onto another. A raw image
                          file or a block device is mapped by its filesystems as imagescan
                          maps a disk: free space is neither read nor written (--allblocks
                          copies it too)
      http(s)://HOST/IMG  a prepared image on a web server: fetched with range requests on
                          several connections (one stream if the server ignores Range),
                          resuming dropped connections; raw images (.img, .gz, .xz, .zst)
                          stream sequentially. user:password@ in the URL is sent as basic
                          authentication and never printed
      asr://HOST[:PORT]   a multicast stream from 'asr server' (port 7800 by default): joins
                          at any point of the loop and finishes when every chunk is in

    TARGET is a block device (a whole disk such as /dev/sdb, or a partition such as
    /dev/sdb2) or an existing regular file (a virtual machine's disk image). A target
    larger than the source keeps the space beyond the source as it was, but for a GPT:
    its backup header and entries are moved to the end of the target and its last usable
    sector follows them, so a whole-disk image on a larger disk is a valid GPT. An image
    of one partition (a volume) restores onto any partition at least its size.

    --grow then fills the larger target: the partition that ends last (GPT or MBR) is
    enlarged to the end of the disk (to a MiB boundary), and its ext2/3/4 filesystem is
    checked (e2fsck -f -p) and grown (resize2fs); for an image of one volume, its
    filesystem is grown to fill the target. Other filesystems are not grown: the restore
    still completes and is verified, and asr says so and exits 1.

    With --file PATH, asr writes a new sparse raw disk image file instead of a device.

STEPS
    Validating target     the target exists, is writable, is not mounted, holds no
                          mounted partition, is not swap, not under device-mapper or RAID,
                          not the disk the running system lives on, and can be opened
                          exclusively
    Validating source     the source is readable; a prepared image's magic, version,
                          header checksum, manifest digest and length are checked; source
                          and target are not the same device, nor the image stored on it
    Validating sizes      the target is at least as large as the source
    Erase contents of TARGET? [ny]
                          asked on a terminal unless --noprompt; with no terminal and
                          no --noprompt, asr refuses
    Erasing target device discards the restored range where the device supports it and
                          zeroes the start of the target, so it no longer looks like a disk
    Restoring             writes every chunk; chunks that are all zeros are zeroed, not
                          written; chunks that are free space in the image's filesystems
                          (see 'asr help imagescan') are left as the erase left them; the
                          first and last chunk (partition table, superblock, GPT backup)
                          are written last, after a flush
    Growing               with --grow: the filesystem is grown, after verification
    Verifying             see VERIFICATION

    Nothing is written to the target until every check has passed. A restore that fails
    after writing began exits 1 and leaves the first chunk blank, so the half-written disk
    does not pass as a good one.

VERIFICATION
    After a flush, asr reads the whole restored range back from the target, bypassing
    the page cache (O_DIRECT; on filesystems without O_DIRECT, after dropping the cached
    pages), and checks each chunk: a zero chunk must read as zeros, every other chunk must
    have the SHA-256 the source gave it (from the image's manifest, or computed while
    reading a raw source). Free space of the image's filesystems was not written and is
    not read: the summary then says "Verified N of used data". A GPT adjusted for a larger
    target is checked as written (its first chunk against its new digest, the moved
    backup byte for byte). A mismatch fails with the byte range, and the first chunk is
    blanked. Other bytes beyond the source's size are not read. --noverify skips this step
    and says so.

OPTIONS
    --source SOURCE     what to restore (required)
    --target TARGET     where to restore it
    --file PATH         write a new raw disk image file (with --erase, replace an existing one)
    --erase             erase the target and copy blocks; without it, --target is a volume
                        to copy files into (see FILE COPY)
    --noprompt          do not ask before erasing
    --noverify          do not read the target back
    --allblocks         a raw image or device source: copy free space too, byte for byte
    --grow              enlarge the last partition and its ext2/3/4 filesystem (or an image
                        of one volume's filesystem) to fill a larger target
    --puppetstrings     print progress for programs instead of people (see PUPPETSTRINGS)
    --workers N         parallel decode/write/verify workers (default: max(4, CPUs)); at
                        most what keeps their buffers within 96 MiB (32 at 1 MiB chunks);
                        file copy: items copied at once, default max(16, 4 x CPUs)
    --timeout SECONDS   network sources: give up after this long without data (default 30);
                        http(s): every wait counts, the first answer and IMG.sha256
                        included, and a connection quiet for half of it is reconnected
    --retries N         http(s): reconnections in a row without progress (default 5)
    --cacert FILE       https: also trust the CA certificates in FILE
    --checksum sha256:HEX
                        raw images over http(s): the SHA-256 of the file as served; else
                        IMG.sha256 beside it is used when the server has one (a 404
                        means none; any other failure to fetch it is an error). Without
                        either, the summary says the download itself was not checked
    --interface IF      asr://: join the multicast group on this interface

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
    compressed raw image and an http(s):// or asr:// source are first unpacked into a
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

EXAMPLES
    asr restore --source /srv/lab.asr --target /dev/sdb --erase
    asr restore --source /dev/sda --target /dev/sdb --erase --noprompt     (clone)
    asr restore --source disk.img.xz --file /var/lib/vm/disk.raw
    asr restore --source /srv/lab.asr --target /dev/sdb2                   (file copy)
    asr restore --source /dev/sdc1 --target /mnt/data                      (file copy)
`

const manImagescan = `NAME
    asr imagescan - make a prepared image from a disk

SYNOPSIS
    asr imagescan --source DISK --output IMAGE [--chunksize BYTES] [--allblocks] [--overwrite]
                  [--puppetstrings]

DESCRIPTION
    Reads DISK from start to end and writes IMAGE, a prepared image: the disk cut into
    chunks (1 MiB by default), each compressed with zstd on all cores and named by the
    SHA-256 of its bytes; chunks that are all zeros are not stored. A manifest at the
    front lists every chunk, and the SHA-256 of the manifest is the image's digest.

    DISK is a raw disk image, a raw image compressed with gzip, xz or zstd, or a block
    device (a whole disk with its partitions, or one partition). Unmount it, or mount it
    read-only, while it is scanned: a filesystem that changes during the scan gives an
    image of no consistent moment.

    Before reading the data, imagescan maps which bytes matter, from the disk's own
    metadata: the partition table (MBR or GPT, both GPT copies kept), and in each
    partition its filesystem's allocation maps: ext2/3/4 block bitmaps (flex_bg, meta_bg
    and uninitialised groups included), the FAT of FAT12/16/32, the header of a Linux
    swap area. Free space is not stored, whatever old data it holds: chunks with no used
    byte are marked unused, and free bytes inside used chunks are stored as zeros. A
    restore then leaves free space as the erase left it, and verification checks the
    used data only. Areas asr cannot map (other filesystems, bytes outside any
    partition, an ext filesystem whose journal needs replaying, damaged metadata) keep
    every non-zero chunk, and imagescan prints a warning naming the area and the reason.
    One line per area says which method mapped it and how much it uses; 'asr info'
    shows the same.

    The same disk scanned with the same options gives the same image, byte for byte.
    The creation time recorded is SOURCE_DATE_EPOCH if set, else the source file's
    modification time, else (a device) the current time.

    The image is written under a temporary name beside IMAGE and renamed when complete.

OPTIONS
    --source DISK        what to scan (required)
    --output IMAGE       the image to write (required)
    --chunksize BYTES    chunk size, a multiple of 4096 from 65536 to 16777216 (default 1048576)
    --allblocks          do not map filesystems: keep every non-zero chunk, free space
                         included (for forensic copies, or to keep deleted data)
    --overwrite          replace IMAGE if it exists
    --puppetstrings      machine-readable progress (see 'asr help restore')

EXAMPLE
    asr imagescan --source /dev/sda --output /srv/images/lab-2026.asr
`

const manInfo = `NAME
    asr info - describe a prepared image

SYNOPSIS
    asr info --source IMAGE [--plist]

DESCRIPTION
    Checks IMAGE's header and manifest and prints its logical size, chunk size and count,
    stored and used bytes, compression ratio, digest, creation time, the asr version that
    made it and a summary of its partition table. --plist prints the same as an XML
    property list.
`

const manServer = `NAME
    asr server - stream a prepared image to many machines by multicast

SYNOPSIS
    asr server --source IMAGE --config asrconfig.plist [--interface IF] [--parity PCT]

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

CONFIGURATION
    A property list (XML or binary, as written by 'defaults write' or plutil) with Apple's
    asr keys:
      Multicast Address       string, required: the group, e.g. 239.255.1.1
      Data Rate               integer, required: bytes per second on the wire, e.g. 6000000
      Client Data Rate        integer: the slowest client's disk speed in bytes per second;
                              the stream is sent at the lower of the two rates
      DNS Service Discovery   boolean, default true: advertise _asr._tcp over mDNS, with
                              the image's name and digest in the TXT record ('asr
                              browse', avahi-browse -r _asr._tcp and dns-sd list it)
      Loop Suspend            integer, default 0: pause after this many passes with no
                              client listening (0: only stop looping when nobody ever came)
      Multicast TTL           integer, default 3: router hops the stream may cross
      Port                    integer, default 7800: the TCP control port; data goes to
                              the group on Port+1
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
    --source IMAGE       the prepared image to stream (required)
    --config PLIST       the configuration (required)
    --interface IF       send the stream out of this interface (default: as routing says)
    --parity PCT         Reed-Solomon parity per chunk, percent of its packets (default 5;
                         0 turns it off)

OUTPUT
    Ready to start accepting clients
    Starting stream 2026-11-26 10:00:00 +0000      (each pass)
    Client 198.18.0.11 (lab-pc-07) joined / NN% / done / failed: reason
`

const manBrowse = `NAME
    asr browse - list the asr servers on the network

SYNOPSIS
    asr browse [--timeout SECONDS] [--interface IF]

DESCRIPTION
    Asks over multicast DNS for DNS-SD services of type _asr._tcp (what 'asr server'
    advertises unless its configuration sets DNS Service Discovery to false), waits
    --timeout seconds (default 3) for answers, and prints one line per server: its name,
    the asr:// source to restore from, the image it serves and the start of its digest.
    Exits 1 when nobody answered.
`

func runHelp(e env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stdout, usageMain)
		return nil
	}
	switch args[0] {
	case "restore":
		fmt.Fprint(e.stdout, manRestore)
	case "imagescan":
		fmt.Fprint(e.stdout, manImagescan)
	case "info":
		fmt.Fprint(e.stdout, manInfo)
	case "server":
		fmt.Fprint(e.stdout, manServer)
	case "browse":
		fmt.Fprint(e.stdout, manBrowse)
	default:
		return usageError("help: no manual for %q (verbs: restore, imagescan, info, server, browse)", args[0])
	}
	return nil
}
