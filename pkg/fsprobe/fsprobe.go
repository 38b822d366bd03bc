// Package fsprobe tells whether a block device (or image file) already holds
// a filesystem, by reading superblock signatures the way blkid does, without
// running blkid. The Flexvolume driver formats only what this package calls
// empty (or an xfs format of its own that never finished, XFSIncomplete).
//
// It errs on the side of "something is there": any known signature counts,
// not just the filesystems the driver creates, so a device that holds data of
// another kind is never formatted either. It is not a full blkid: no labels,
// no UUIDs, no partition tables beyond noticing they exist.
package fsprobe

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Result of a probe.
const (
	None = ""     // no known signature
	Ext4 = "ext4" // ext2/3/4 (the kernel's ext4 driver mounts all three)
	XFS  = "xfs"
	// XFSIncomplete is an xfs superblock with sb_inprogress set: mkfs.xfs
	// sets it first and clears it last, and the kernel refuses to mount
	// such a device, so it is a format that never finished, not a
	// filesystem. Whether it may be formatted again is the caller's call:
	// only one that knows its own mkfs was interrupted can tell.
	XFSIncomplete = "xfs-incomplete"
)

// signature is one magic at a fixed offset.
type signature struct {
	fsType string
	offset int64
	magic  []byte
}

// Foreign signatures (not created by the driver) still block formatting.
var signatures = []signature{
	{Ext4, 0x438, []byte{0x53, 0xef}},
	{XFS, 0, []byte("XFSB")},
	{"btrfs", 0x10040, []byte("_BHRfS_M")},
	{"swap", 4096 - 10, []byte("SWAPSPACE2")},
	{"swap", 4096 - 10, []byte("SWAP-SPACE")},
	{"LUKS", 0, []byte("LUKS\xba\xbe")},
	{"iso9660", 0x8001, []byte("CD001")},
	{"squashfs", 0, []byte("hsqs")},
	{"vfat", 0x52, []byte("FAT32   ")},
	{"f2fs", 0x400, []byte{0x10, 0x20, 0xf5, 0xf2}},
	{"LVM2_member", 0x218, []byte("LVM2 001")},
	{"gpt", 0x200, []byte("EFI PART")},
}

// xfsInProgressOffset is sb_inprogress in the XFS superblock (struct
// xfs_dsb, big-endian, at the start of the device): magicnum(4)
// blocksize(4) dblocks(8) rblocks(8) rextents(8) uuid(16) logstart(8)
// rootino(8) rbmino(8) rsumino(8) rextsize(4) agblocks(4) agcount(4)
// rbmblocks(4) logblocks(4) versionnum(2) sectsize(2) inodesize(2)
// inopblock(2) fname(12) blocklog sectlog inodelog inopblog agblklog
// rextslog, then inprogress: byte 126. The test checks this layout against
// a real mkfs.xfs image.
const xfsInProgressOffset = 0x7e

// probeSize covers every offset above.
const probeSize = 0x10100

// Device reads the first bytes of path and returns the filesystem type found
// (or XFSIncomplete), or None when no known signature is present.
func Device(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return None, fmt.Errorf("open %s for probing: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, probeSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return None, fmt.Errorf("read %s for probing: %w", path, err)
	}
	return Bytes(buf[:n]), nil
}

// Bytes probes the start of a device already read into memory.
func Bytes(buf []byte) string {
	for _, s := range signatures {
		end := s.offset + int64(len(s.magic))
		if end > int64(len(buf)) || !bytes.Equal(buf[s.offset:end], s.magic) {
			continue
		}
		if s.fsType == XFS && len(buf) > xfsInProgressOffset && buf[xfsInProgressOffset] != 0 {
			return XFSIncomplete
		}
		return s.fsType
	}
	return None
}
