// Command echo is the e2e suite's test image: it echoes TCP on :7000 and
// serves HTTP on :8080 so the test can drive the pod from outside:
//
//	GET /healthz                      ok
//	GET /dial?addr=IP:PORT&msg=M      dial addr from inside the pod, send M, return the echo
//	GET /hold?addr=IP:PORT&n=N&every=D one connection, N round trips D apart; "ok" when none failed
//	GET /write?path=P&data=D          write D to P (created with its parents)
//	GET /read?path=P                  the contents of P
//
// It is for tests only and is built statically into an OCI archive.
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func main() {
	// As PID 1 the default action of SIGTERM is ignored: exit on it, so
	// pods stop at once instead of after their grace period.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; os.Exit(0) }()
	ln, err := net.Listen("tcp", ":7000")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	http.HandleFunc("/dial", dial)
	http.HandleFunc("/hold", hold)
	http.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("path")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := os.WriteFile(p, []byte(r.URL.Query().Get("data")), 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	http.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}

// dial connects to addr, sends msg and answers with what came back.
func dial(w http.ResponseWriter, r *http.Request) {
	addr, msg := r.URL.Query().Get("addr"), r.URL.Query().Get("msg")
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	_, _ = w.Write(buf)
}

// hold keeps one connection to addr open for n round trips, every apart,
// and fails at the first lost one: it proves a connection survives
// whatever the test does meanwhile.
func hold(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	every, err := time.ParseDuration(r.URL.Query().Get("every"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 3*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer c.Close()
	buf := make([]byte, 16)
	for i := range n {
		msg := fmt.Sprintf("ping %010d", i)
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			http.Error(w, fmt.Sprintf("round trip %d: %v", i, err), http.StatusBadGateway)
			return
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
			http.Error(w, fmt.Sprintf("round trip %d: %v", i, err), http.StatusBadGateway)
			return
		}
		time.Sleep(every)
	}
	fmt.Fprint(w, "ok")
}
