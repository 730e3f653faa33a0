// Command web is the end-to-end tests' workload: an HTTP server that answers with
// its host name (the pod name), a client mode so that a test can make requests
// from inside a pod, and a sleep mode for slow jobs. It is built by the tests and
// packed into an image archive.
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "fetch" {
		os.Exit(fetch(os.Args[2]))
	}
	// write and cat let a test check a volume's content from inside a pod.
	if len(os.Args) == 4 && os.Args[1] == "write" {
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "cat" {
		data, err := os.ReadFile(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(data)
		return
	}
	// sleep makes a slow job: a chart's hook that keeps an install pending.
	if len(os.Args) == 3 && os.Args[1] == "sleep" {
		d, err := time.ParseDuration(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(d)
		return
	}
	// lookup resolves a name as a program in the pod would (the pod's
	// resolv.conf, search path included) and prints its addresses.
	if len(os.Args) == 3 && os.Args[1] == "lookup" {
		addrs, err := net.LookupHost(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, a := range addrs {
			fmt.Println(a)
		}
		return
	}
	name, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("request %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	log.Printf("listening on :8080 as %s", name)
	log.Fatal(http.ListenAndServe(":8080", nil))
}

func fetch(url string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
