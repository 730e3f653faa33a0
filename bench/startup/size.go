package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// sizes of one binary, or of a sum of binaries, in bytes.
type sizes struct{ Raw, Gzip, Strong int64 }

func (a sizes) plus(b sizes) sizes {
	return sizes{a.Raw + b.Raw, a.Gzip + b.Gzip, a.Strong + b.Strong}
}

// strongCompressor is xz -9 (what release archives use), or zstd -19 where
// xz is not installed. Single-threaded: xz -T0 would cut the input into
// blocks and compress less well.
func strongCompressor() []string {
	if _, err := exec.LookPath("xz"); err == nil {
		return []string{"xz", "-9", "-T1", "-c"}
	}
	return []string{"zstd", "-19", "-T1", "-c"}
}

// measureSizes compresses each file with gzip -9 and the strong compressor,
// one file per CPU at a time. xz -9 runs at about 1 MB/s, so results are
// kept in cacheFile by the file's SHA-256: the baseline's binaries do not
// change between runs.
func measureSizes(ctx context.Context, cacheFile string, files []string) (map[string]sizes, error) {
	strong := strongCompressor()
	cache := map[string]sizes{}
	if data, err := os.ReadFile(cacheFile); err == nil {
		_ = json.Unmarshal(data, &cache) // a damaged cache is only recomputed
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, runtime.NumCPU())
		out      = map[string]sizes{}
		fresh    = map[string]sizes{} // by cache key
	)
	for _, file := range files {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			key, sz, err := fileSizes(ctx, file, strong, cache)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("compressing %s: %w", file, err)
			}
			out[file], fresh[key] = sz, sz
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for key, sz := range fresh {
		cache[key] = sz
	}
	if data, err := json.Marshal(cache); err == nil {
		_ = os.MkdirAll(filepath.Dir(cacheFile), 0o755)
		_ = os.WriteFile(cacheFile, data, 0o644)
	}
	return out, nil
}

func fileSizes(ctx context.Context, file string, strong []string, cache map[string]sizes) (string, sizes, error) {
	key, err := cacheKey(file, strong)
	if err != nil {
		return "", sizes{}, err
	}
	if sz, ok := cache[key]; ok {
		return key, sz, nil
	}
	st, err := os.Stat(file)
	if err != nil {
		return key, sizes{}, err
	}
	gz, err := compressedSize(ctx, file, []string{"gzip", "-9", "-c"})
	if err != nil {
		return key, sizes{}, err
	}
	xz, err := compressedSize(ctx, file, strong)
	return key, sizes{Raw: st.Size(), Gzip: gz, Strong: xz}, err
}

// cacheKey names the content and the compressor.
func cacheKey(file string, strong []string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)) + " " + fmt.Sprint(strong), nil
}

func compressedSize(ctx context.Context, file string, command []string) (int64, error) {
	in, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	var n countWriter
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout = in, &n
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%v: %w", command, err)
	}
	return int64(n), nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}
