// peer-nethttp: the benchmark subset of brisk's contract in Go with only the
// standard library's net/http and encoding/json (Go 1.19: no method/pattern
// routing in ServeMux yet, so the handlers check the method themselves).
//
// For the TLS and HTTP/2 rows of the benchmark: BRISK_TLS_ADDR with BRISK_TLS_CERT
// and BRISK_TLS_KEY adds a listener with ListenAndServeTLS (crypto/tls defaults; it
// negotiates h2 by ALPN, net/http's bundled HTTP/2 server); BRISK_H2C_ADDR adds a
// cleartext listener for HTTP/2 with prior knowledge (golang.org/x/net/http2/h2c).
// BRISK_ADDR stays as it was.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"briskpeer"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"internal error"}`, 500)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func fail(w http.ResponseWriter, err error) {
	status, body := briskpeer.StatusOf(err)
	writeJSON(w, status, body)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeJSON(w, 415, briskpeer.ErrorBody{Error: "content-type must be application/json"})
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(v); err != nil {
		writeJSON(w, 400, briskpeer.ErrorBody{Error: "invalid json: " + err.Error()})
		return false
	}
	return true
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, 405, briskpeer.ErrorBody{Error: "method not allowed"})
}

func main() {
	cfg := briskpeer.LoadConfig("127.0.0.1:8083")
	svc, err := briskpeer.NewService(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "database:", err)
		os.Exit(1)
	}
	defer svc.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok"))
	})
	mux.HandleFunc("/users", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		var req briskpeer.CreateUserRequest
		if !decode(w, r, &req) {
			return
		}
		if err := req.Validate(); err != nil {
			fail(w, err)
			return
		}
		u, err := svc.CreateUser(r.Context(), &req)
		if err != nil {
			fail(w, err)
			return
		}
		w.Header().Set("Location", "/users/"+strconv.FormatInt(u.ID, 10))
		writeJSON(w, http.StatusCreated, u)
	})
	mux.HandleFunc("/users/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		id, err := briskpeer.ParseID(strings.TrimPrefix(r.URL.Path, "/users/"))
		if err != nil {
			fail(w, err)
			return
		}
		u, err := svc.GetUser(r.Context(), id)
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, u)
	})
	mux.HandleFunc("/orders/process", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		var req briskpeer.ProcessRequest
		if !decode(w, r, &req) {
			return
		}
		if err := req.Validate(); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, svc.Process(&req))
	})

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "peer-nethttp")
		mux.ServeHTTP(w, r)
	})
	newServer := func(addr string, h http.Handler) *http.Server {
		return &http.Server{
			Addr:              addr,
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       60 * time.Second,
		}
	}
	if addr := os.Getenv("BRISK_TLS_ADDR"); addr != "" {
		tlsSrv := newServer(addr, handler)
		cert, key := os.Getenv("BRISK_TLS_CERT"), os.Getenv("BRISK_TLS_KEY")
		go func() { log.Fatal(tlsSrv.ListenAndServeTLS(cert, key)) }()
	}
	if addr := os.Getenv("BRISK_H2C_ADDR"); addr != "" {
		h2cSrv := newServer(addr, h2c.NewHandler(handler, &http2.Server{}))
		go func() { log.Fatal(h2cSrv.ListenAndServe()) }()
	}
	log.Fatal(newServer(cfg.Addr, handler).ListenAndServe())
}
