// Command selfcheck stands in for drover's executables in the install
// tests. Its file is this program followed by a trailer:
//
//	payload | sha256(program and payload) | len(payload) (8 bytes, big endian) | "SELFCHK1"
//
// It reads the file it was executed from, checks the trailer and the hash,
// and prints the payload's first line (the version). A file that is only
// partly written either fails to exec or fails this check (exit 3), so a
// reader that sees "selfcheck ok" saw a whole file.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
)

const magic = "SELFCHK1"

func main() {
	data, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		fmt.Fprintln(os.Stderr, "read self:", err)
		os.Exit(3)
	}
	tail := len(magic) + 8 + sha256.Size
	if len(data) < tail || string(data[len(data)-len(magic):]) != magic {
		fmt.Fprintln(os.Stderr, "no trailer")
		os.Exit(3)
	}
	n := binary.BigEndian.Uint64(data[len(data)-len(magic)-8:])
	body := data[:len(data)-tail]
	sum := data[len(data)-tail : len(data)-tail+sha256.Size]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) || n > uint64(len(body)) {
		fmt.Fprintln(os.Stderr, "checksum mismatch")
		os.Exit(3)
	}
	payload := body[len(body)-int(n):]
	version, _, _ := bytes.Cut(payload, []byte("\n"))
	fmt.Printf("selfcheck ok %s\n", version)
}
