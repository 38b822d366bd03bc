package loopdev

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// newImage makes a sparse file and registers the release of any loop device
// bound to it, even if the test fails halfway.
func newImage(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("loop device tests need root")
	}
	dir, _ := filepath.EvalSymlinks(t.TempDir())
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if dev, err := Find(img); err == nil {
			DetachFile(dev, img)
		}
	})
	return img
}

func TestAttachFindAutoclear(t *testing.T) {
	img := newImage(t)
	d, err := Attach(img, false)
	if err != nil {
		t.Fatal(err)
	}
	found, err := Find(img)
	if err != nil || found != d.Path {
		t.Fatalf("Find = %q %v, want %s", found, err, d.Path)
	}
	if b, err := BackingFile(d.Path); err != nil || b != img {
		t.Fatalf("BackingFile = %q %v", b, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Autoclear: the last close frees the device.
	if _, err := Find(img); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after the last close Find = %v, want ErrNotFound", err)
	}
}

func TestDetachFile(t *testing.T) {
	img := newImage(t)
	other := newImage(t)
	d, err := Attach(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Run("a device bound to another file is left alone", func(t *testing.T) {
		if err := DetachFile(d.Path, other); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
		if _, err := Find(img); err != nil {
			t.Fatalf("device was detached: %v", err)
		}
	})
	t.Run("the device of the file is detached once held no more", func(t *testing.T) {
		if err := DetachFile(d.Path, img); err != nil {
			t.Fatal(err)
		}
		d.Close()
		if _, err := Find(img); !errors.Is(err, ErrNotFound) {
			t.Fatalf("still bound: %v", err)
		}
	})
	t.Run("a free device answers ErrNotFound", func(t *testing.T) {
		if err := DetachFile(d.Path, img); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
}

func TestSetCapacity(t *testing.T) {
	img := newImage(t)
	d, err := Attach(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := SetCapacity(d.Path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(d.Path), "size"))
	if err != nil || string(b) != "32768\n" {
		t.Fatalf("size in sectors = %q %v, want 32768", b, err)
	}
}
